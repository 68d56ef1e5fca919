"""Column names: tokenization and the multilingual dictionary of PII column names.

``tokenize("custEmailAddr2")`` -> ``["cust", "email", "addr", "2"]``: accents folded, camelCase,
snake_case, kebab-case and digit runs split; a token the dictionary does not know is segmented
into known words when it can be covered entirely (``emailaddress``, ``telefonnummer``,
``datedenaissance``) or, for compounds, split before a known head word (``rechnungsadresse``).

``match_name(name)`` finds dictionary phrases in the tokens and decides which one describes the
column, with three rules that keep modifiers from being mistaken for content:

* the head is the rightmost phrase (``email_verification_token`` holds a token, not an email);
* a phrase followed by a modifier (``_count``, ``_verified``, ``_at``, ``_hash``, ``_type``,
  ``_id``, ...) or preceded by ``is_``/``has_``/``nb_`` describes something else (``email_count``,
  ``phone_verified``, ``is_mobile``) and is dropped;
* name-like heads (``name``, ``nom``, ``nombre``, ``nome``, ``naam``) are *ambiguous*: a person
  qualifier next to them (``customer_name``, ``nom_client``) makes a person name, a known
  non-person word (``product_name``, ``hostname``, ``nombre_producto``) makes no match at all,
  and otherwise the decision is left to the values or the table (``customers.name``).

The dictionary is data (``_DICTIONARY`` below): one block per class, one line per language,
phrases separated by commas; a trailing ``?`` marks an ambiguous phrase that needs corroborating
values. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .text import fold

# class, then "  lang: phrase, phrase, ...". Phrases are space-separated tokens, ASCII, lower case.
_DICTIONARY = """
person_name
  en: full name, fullname, display name, displayname, real name, legal name, person name,
      contact name, cardholder, card holder, cardholder name, account holder, holder name,
      name?
  fr: nom complet, nom prenom, prenom nom, titulaire, nom?
  de: vollstandiger name, vollername, inhaber, kontoinhaber, name?
  es: nombre completo, nombre y apellidos, nombre apellidos, titular, nombre?
  it: nome completo, nome e cognome, nome cognome, intestatario, titolare, nome?
  pt: nome completo, titular, nome?
  nl: volledige naam, rekeninghouder, naam?
first_name
  en: first name, firstname, fname, given name, givenname, forename, middle name, middlename
  fr: prenom, prenoms
  de: vorname, vornamen, rufname
  es: nombre de pila, primer nombre
  it: nome proprio
  pt: primeiro nome, prenome
  nl: voornaam, voornamen, roepnaam
last_name
  en: last name, lastname, lname, surname, family name, familyname, maiden name, maidenname
  fr: nom de famille, nom famille, nom de naissance, nom d usage
  de: nachname, familienname, zuname, geburtsname
  es: apellido, apellidos, primer apellido, segundo apellido
  it: cognome, cognomi
  pt: sobrenome, apelido, ultimo nome
  nl: achternaam, familienaam
email
  en: email, e mail, mail, email address, emailaddress, mail address, mailaddress,
      e mail address, email addr, mail addr, e mail addr, emailaddr
  fr: courriel, adresse mail, adresse email, adresse e mail, adresse electronique
  de: e mail adresse, emailadresse, mailadresse
  es: correo, correo electronico, direccion de correo, direccion email
  it: posta elettronica, indirizzo email, indirizzo mail, pec
  pt: endereco de email, endereco email, correio eletronico, correio electronico
  nl: emailadres, mailadres, e mailadres
phone
  en: phone, phone number, phonenumber, phone no, telephone, tel, tel no, telno, mobile,
      mobile number, mobile phone, cellphone, cell phone, cell?, msisdn, fax, landline,
      contact number, contact no, whatsapp
  fr: telephone, numero de telephone, num tel, no tel, tel portable, portable?, numero portable
  de: telefon, telefonnummer, handy, handynummer, mobilnummer, mobiltelefon, festnetz,
      rufnummer
  es: telefono, movil, celular, numero de telefono, telefono movil
  it: cellulare, numero di telefono, numero telefono, telefonino
  pt: telefone, telemovel, numero de telefone, numero telefone
  nl: telefoon, telefoonnummer, mobiel, mobiele nummer, gsm, mobielnummer
username
  en: username, user name, login, login name, loginname, user login, handle?, screen name,
      screenname, nickname, nick, account name
  fr: nom utilisateur, nom d utilisateur, identifiant, pseudo
  de: benutzername, benutzer, anmeldename, benutzerkennung
  es: nombre de usuario, nombre usuario, usuario
  it: nome utente, utente
  pt: nome de usuario, nome usuario, usuario, utilizador
  nl: gebruikersnaam, gebruiker, inlognaam
address
  en: address, addr?, street, street address, street name, address line, addressline,
      home address, postal address, mailing address, billing address, shipping address,
      residential address, house number, residence
  fr: adresse, adresse postale, rue, domicile, numero de rue
  de: anschrift, adresse, strasse, strassenname, wohnadresse, hausnummer, wohnanschrift
  es: direccion, domicilio, calle, direccion postal
  it: indirizzo, residenza, domicilio
  pt: endereco, morada, rua, logradouro
  nl: adres, straat, straatnaam, huisnummer, woonadres
postal_code
  en: zip, zipcode, zip code, postal code, postalcode, postcode, post code
  fr: code postal, codepostal
  de: plz, postleitzahl
  es: codigo postal, cod postal
  it: codice postale, cap?
  pt: cep, codigo postal
  nl: postcode
city
  en: city, town, hometown, city name, birthplace, place of birth
  fr: ville, lieu de naissance
  de: stadt, wohnort, geburtsort
  es: ciudad, localidad, lugar de nacimiento
  it: citta, luogo di nascita
  pt: cidade, localidade, naturalidade
  nl: stad, woonplaats, geboorteplaats
date_of_birth
  en: dob, d o b, date of birth, dateofbirth, birth date, birthdate, birthday, bday, born on,
      birth dt
  fr: date de naissance, date naissance, datenaissance, naissance, ddn, date nais
  de: geburtsdatum, geburtstag, geb datum, gebdatum, geboren am
  es: fecha de nacimiento, fecha nacimiento, nacimiento, fec nac, f nacimiento
  it: data di nascita, data nascita, datanascita, nascita
  pt: data de nascimento, data nascimento, nascimento, dt nasc
  nl: geboortedatum, geboren, geb datum
gender
  en: gender, sex
  fr: sexe
  de: geschlecht
  es: sexo, genero
  it: sesso, genere
  pt: sexo, genero
  nl: geslacht
geolocation
  en: latitude, longitude, lat, lng, lon, latlng, latlon, lat long, latlong, geolocation,
      geoloc, geo, geopoint, gps, coordinates, coords, location?
  fr: coordonnees gps, position gps
  de: breitengrad, langengrad, laengengrad, standort?, koordinaten
  es: latitud, longitud, ubicacion?, coordenadas
  it: latitudine, longitudine, posizione?, coordinate
  pt: localizacao?, coordenadas
  nl: breedtegraad, lengtegraad, locatie?
ip_address
  en: ip, ip address, ipaddress, ip addr, ipaddr, ipv, remote addr, remote address,
      x forwarded for, forwarded for
  fr: adresse ip
  de: ip adresse
  es: direccion ip
  it: indirizzo ip
  pt: endereco ip
  nl: ip adres
national_id
  en: ssn, social security number, social security no, social security, nin, nino,
      national insurance number, national id, national identifier, national id number,
      id card, id card number, identity card, identity number, personal id,
      personal number, citizen id, national identity number, sin?
  fr: nir, numero de securite sociale, numero securite sociale, num secu, securite sociale,
      secu, insee, numero insee, cni, carte identite, carte d identite, numero carte identite
  de: sozialversicherungsnummer, svnr, sv nummer, personalausweis, personalausweisnummer,
      ausweisnummer, ausweis, ahv, ahv nummer
  es: dni, nie, nss, numero de seguridad social, numero seguridad social,
      documento de identidad, documento identidad, cedula
  it: carta d identita, carta identita, numero carta identita
  pt: cartao de cidadao, cartao cidadao, rg, bilhete de identidade
  nl: bsn, burgerservicenummer, sofinummer, sofi nummer, identiteitskaart
  intl: pesel, personnummer, personal identity number
tax_id
  en: tax id, taxid, tin, tax number, tax no, taxpayer id, tax identification number, itin,
      tax identifier
  fr: numero fiscal, numero fiscal de reference
  de: steuer id, steuerid, steuernummer, steuer nr, steueridentifikationsnummer, idnr
  es: nif, numero de identificacion fiscal, cuit, cuil
  it: codice fiscale, cod fiscale, codicefiscale
  pt: nif, contribuinte, numero de contribuinte, numero contribuinte, cpf
  nl: fiscaal nummer, fiscaalnummer
passport
  en: passport, passport number, passport no, passport num, passportnumber
  fr: passeport, numero de passeport, numero passeport
  de: reisepass, reisepassnummer, passnummer
  es: pasaporte, numero de pasaporte, numero pasaporte
  it: passaporto, numero passaporto
  pt: passaporte, numero do passaporte, numero passaporte
  nl: paspoort, paspoortnummer
driver_license
  en: driver license, drivers license, driving license, driving licence, driver licence,
      drivers licence, dl number
  fr: permis de conduire, numero de permis, permis conduire
  de: fuhrerschein, fuehrerschein, fuhrerscheinnummer, fuehrerscheinnummer
  es: licencia de conducir, carnet de conducir, permiso de conducir
  it: patente di guida
  pt: carta de conducao, carteira de motorista, cnh
  nl: rijbewijs, rijbewijsnummer
iban
  en: iban, iban number, iban code, iban no
  fr: numero iban, code iban
  de: iban nummer
  es: numero iban, cuenta iban
  it: codice iban
  pt: numero iban
  nl: iban nummer
bank_account
  en: bank account, bank account number, account number?, account no?, acct no, acct num,
      acctno, bank acct, bank details
  fr: rib, numero de compte, compte bancaire, coordonnees bancaires
  de: kontonummer, bankverbindung, konto nr, kontonr, bankkonto
  es: cuenta bancaria, numero de cuenta, ccc
  it: conto corrente, numero conto, numero di conto
  pt: conta bancaria, numero de conta, numero da conta, nib
  nl: rekeningnummer, bankrekening, bankrekeningnummer, rekening?
payment_card
  en: card number, cardnumber, card no, card num, credit card, creditcard, credit card number,
      cc number, ccnumber, cc num, ccnum, cc no, pan?, debit card, payment card, card pan,
      primary account number, cvv, cvv2, cvc, cvc2, csc, card security code, card verification
  fr: numero de carte, numero carte, carte bancaire, carte credit, carte de credit, num carte,
      cryptogramme
  de: kreditkarte, kreditkartennummer, kartennummer
  es: tarjeta, numero de tarjeta, numero tarjeta, tarjeta de credito, tarjeta credito
  it: carta di credito, carta credito, numero carta, numero di carta
  pt: cartao, numero do cartao, numero cartao, cartao de credito, cartao credito
  nl: kaartnummer, creditcardnummer, bankpas
secret
  en: api key, apikey, api token, api secret, access key, access key id, secret access key,
      secret key, secret, client secret, consumer secret, app secret, token, access token,
      refresh token, auth token, authentication token, bearer token, bearer, id token,
      session token, csrf token, reset token, verification token, confirmation token,
      invite token, remember token, otp secret, totp secret, mfa secret, two factor secret,
      webhook secret, signing secret, signing key, encryption key, master key, credentials,
      credential, jwt, oauth token, private token, personal access token, auth key, license key?
  fr: cle api, cle secrete, jeton, jeton d acces, jeton acces
  de: api schlussel, geheimer schlussel, zugangsschlussel, zugangstoken
  es: clave api, clave secreta
  it: chiave api, chiave segreta
  pt: chave api, chave secreta
  nl: api sleutel, geheime sleutel, toegangstoken
password
  en: password, passwd, pwd, pass word, passcode, passphrase
  fr: mot de passe, motdepasse, mdp
  de: passwort, kennwort
  es: contrasena
  it: parola d ordine
  pt: senha
  nl: wachtwoord
password_hash
  en: password hash, passwordhash, hashed password, password digest, encrypted password,
      crypted password, pw hash, pwd hash, pass hash, passhash, password hashed, pwhash,
      password crypt
  fr: mot de passe hash, hash mdp, mdp hash, mot de passe chiffre
  de: passwort hash, kennwort hash, passworthash
  es: contrasena hash, hash contrasena, clave hash
  it: password hash
  pt: senha hash, hash senha, senha criptografada
  nl: wachtwoord hash, wachtwoordhash
private_key
  en: private key, privatekey, priv key, privkey, private key pem, ssh private key,
      rsa private key, signing private key, pem?
  fr: cle privee
  de: privater schlussel, privatschlussel, privater schluessel
  es: clave privada, llave privada
  it: chiave privata
  pt: chave privada
  nl: prive sleutel, private sleutel, priv sleutel
"""

# Words that make the next or previous name-like head a person's name.
PERSON_WORDS = frozenset("""
customer customers client clients cliente clientes clienti kunde kunden klant klanten contact
contacts contacto contatto contato person persons people personne personnes persona persone
pessoa pessoas persoon personen employee employees employe employes empleado empleados
dipendente dipendenti funcionario funcionarios mitarbeiter medewerker medewerkers werknemer
staff patient patients paciente pacientes paziente pazienti member members membre membres
miembro miembros socio soci mitglied mitglieder lid leden owner owners proprietaire
propietario proprietario eigentumer eigenaar holder titular titulaire inhaber houder author
auteur autor autore recipient destinataire destinatario empfanger ontvanger sender expediteur
remitente mittente absender afzender guest guests passenger passengers student students
etudiant etudiants estudiante alumno studente aluno leerling beneficiary beneficiaire
beneficiario begunstigde buyer driver doctor teacher manager father mother parent spouse
child emergency billing shipping user users usuario usuarios utente utenti utilisateur
utilisateurs gebruiker gebruikers benutzer nutzer applicant candidate tenant resident
subscriber account accounts profile profiles individual individuals citizen voter donor
volunteer prospect lead leads consumer consumers traveler traveller visitor visitors
""".split())

# Known words that make a name-like head the name of a thing, not a person.
THING_WORDS = frozenset("""
product products produit produits producto productos prodotto prodotti produkt produkte
produto produtos item items article articles articulo articulos articolo articoli artikel
artigo file fichier archivo datei bestand ficheiro arquivo host hostname server machine device
domain company societe entreprise empresa azienda firma unternehmen bedrijf organization
organisation org business brand marque marca marke merk store shop boutique tienda negozio
loja winkel geschaft project projet proyecto progetto projekt projeto team equipe group
groupe grupo gruppo gruppe groep role category categorie categoria kategorie tag label table
column schema database db index field attribute class module package app application service
plan bucket queue topic event job task step metric feature model version branch repo
repository image container cluster node region zone country pays pais paese land province
department departement abteilung departamento dipartimento afdeling bank banque banco banca
course school hotel restaurant venue campaign template code type status kind key param
parameter var variable setting config option method function func procedure trigger view
sequence constraint tenant workspace site page section menu button form report document doc
channel platform vendor supplier fournisseur proveedor fornitore lieferant fornecedor
leverancier merchant partner carrier network provider source target dest destination env
environment resource asset tool plugin extension theme font color colour icon room building
warehouse location street rue calle strasse straat rua via city ville ciudad citta stadt
cidade stad town brand sku sheet tab folder dir directory path url uri link bucket dataset
collection entity object thing screen display game level map style format pattern rule
policy permission scope tier plan product currency language lang locale timezone unit
measure mime file mac wallet memory web contract bitcoin btc eth crypto gateway endpoint
proxy router ipfs
""".split())

# A phrase followed by one of these describes something else about the value.
_TRAILING_STOP = frozenset("""
id ids uuid guid fk pk ref key count cnt counter total qty verified verification
confirmed confirmation validated valid validity consent optin opt optout unsubscribed
bounce bounced bounces sent status state type kind format template domain provider enabled
enable flag at on ts time timestamp date datetime dt updated changed created expires expiry
expiration exp length len size hash hashed digest md mdfive sha salt mask masked prefix
suffix bin brand network issuer country region visibility visible public preference pref
prefs setting settings policy limit attempts tries retries version ver algo algorithm scheme
rounds iterations cost reset hint required last four lastfour used requested sequence seq
index idx order rank source label template templates list lists opened clicked read file
path url
""".split())
# ... and one of these in front of it (is_mobile, has_email, nb_emails, count_phone).
_LEADING_STOP = frozenset("is has can should allow use nb nbr count total max min avg n needs "
                          "requires sum".split())

# Column names that say "this is a category / free text" (used by the decoy rules).
CATEGORICAL_WORDS = frozenset("""
status statuses state etat statut estado stato staat zustand type types kind category
categorie categoria kategorie class level niveau nivel livello stage phase mode tier priority
prioridad priorita prioritat severity flag flags role rol ruolo rolle source channel canal
reason motif motivo grund result resultat resultado risultato outcome segment grade rank
tipo typ soort art version
""".split())
FREE_TEXT_WORDS = frozenset("""
description desc descr notes note comment comments remark remarks memo text body message msg
summary details detail content contents bio about observation observations commentaire
commentaires remarque remarques texte beschreibung bemerkung bemerkungen notiz notizen
kommentar kommentare anmerkung anmerkungen nachricht descripcion comentario comentarios nota
notas observaciones mensaje texto descrizione commento commenti messaggio testo descricao
observacao observacoes mensagem omschrijving opmerking opmerkingen beschrijving notitie
notities bericht tekst
""".split())

# Small joining words skipped when looking for a qualifier next to a head.
_FILLERS = frozenset("de of du des del della di da do dos das van der den von the d y e".split())
# Compound heads: a token ending with one of these, after at least 3 other letters, is split
# before it ("rechnungsadresse" -> "rechnungs" "adresse"; "kundenname" -> "kunden" "name").
_COMPOUND_HEADS = ("adresse", "address", "adres", "email", "telefon", "telefoon", "phone",
                   "passwort", "wachtwoord", "password", "iban", "strasse", "straat", "name",
                   "naam", "nummer")
# Two-letter words segmentation may use (longer pieces come from the vocabulary).
_SHORT_PIECES = frozenset({"ip", "id", "nr", "no", "de", "cc", "pw"})


@dataclass(frozen=True)
class Phrase:
    pii_class: str
    lang: str
    text: str
    tokens: tuple[str, ...]
    ambiguous: bool


def _parse_dictionary(source: str) -> dict[tuple[str, ...], Phrase]:
    phrases: dict[tuple[str, ...], Phrase] = {}
    pii_class = ""
    lang = ""
    for raw in source.splitlines():
        if not raw.strip():
            continue
        if not raw.startswith(" "):
            pii_class = raw.strip()
            continue
        line = raw.strip()
        m = re.match(r"^([a-z]{2,4}):\s*(.*)$", line)
        if m:
            lang, line = m.group(1), m.group(2)
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            ambiguous = item.endswith("?")
            text = item.rstrip("?").strip()
            tokens = tuple(text.split())
            # First definition wins: the dictionary lists the more specific classes first where
            # it matters (e.g. "password hash" is its own phrase, not "password" + "hash").
            # The same phrase in several languages for the same class keeps all of them.
            known = phrases.get(tokens)
            if known is None:
                phrases[tokens] = Phrase(pii_class, lang, text, tokens, ambiguous)
            elif known.pii_class == pii_class and lang not in known.lang.split("/"):
                phrases[tokens] = Phrase(pii_class, f"{known.lang}/{lang}", text, tokens,
                                         known.ambiguous)
    return phrases


PHRASES: dict[tuple[str, ...], Phrase] = _parse_dictionary(_DICTIONARY)
_NAME_HEADS = frozenset({"name", "nom", "nombre", "nome", "naam"})
# Address heads: "warehouse_address", "mac_address", "server_addr" are not a person's address.
_ADDRESS_HEADS = frozenset({"address", "addr", "adresse", "adres", "direccion", "indirizzo",
                            "endereco", "anschrift"})
MAX_PHRASE = max(len(t) for t in PHRASES)
VOCABULARY: frozenset[str] = frozenset(
    {tok for toks in PHRASES for tok in toks} | PERSON_WORDS | THING_WORDS | _TRAILING_STOP
    | _LEADING_STOP | CATEGORICAL_WORDS | FREE_TEXT_WORDS | _FILLERS
    | {"line", "primary", "secondary", "home", "work", "private", "business", "contact",
       "number", "numero", "nummer", "num", "code", "codigo", "codice", "first", "last"})

# Segmentation uses the vocabulary minus very short words that would split ordinary English
# ("exp" + "ort" in "export"): two-letter pieces only from _SHORT_PIECES, and no stop word
# shorter than four letters.
_SEGMENT_VOCABULARY = frozenset(
    w for w in VOCABULARY
    if (len(w) >= 3 or w in _SHORT_PIECES)
    and not (len(w) <= 3 and (w in _TRAILING_STOP or w in _LEADING_STOP)
             and w not in _SHORT_PIECES))

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _segment(token: str) -> list[str] | None:
    """Cover `token` entirely with vocabulary words (fewest pieces), or None."""
    n = len(token)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for end in range(1, n + 1):
        for start in range(max(0, end - 40), end):
            prev = best[start]
            piece = token[start:end]
            if prev is None or piece not in _SEGMENT_VOCABULARY:
                continue
            cand = prev + [piece]
            cur = best[end]
            if cur is None or len(cand) < len(cur):
                best[end] = cand
    result = best[n]
    return result if result and len(result) > 1 else None


def _normalize_token(token: str) -> list[str]:
    if token in VOCABULARY or token.isdigit():
        return [token]
    for suffix in ("s", "es", "en", "n"):  # plurals: emails, addresses, kunden, vornamen
        stem = token[: -len(suffix)]
        if token.endswith(suffix) and len(stem) >= 3 and stem in VOCABULARY:
            return [stem]
    pieces = _segment(token)
    if pieces:
        return pieces
    for head in _COMPOUND_HEADS:
        if token.endswith(head) and len(token) - len(head) >= 3:
            prefix = token[: -len(head)]
            return (_segment(prefix) or [prefix]) + [head]
    return [token]


@lru_cache(maxsize=4096)
def _tokenize(name: str) -> tuple[str, ...]:
    out: list[str] = []
    for raw in _CAMEL.findall(fold(name)):
        out.extend(_normalize_token(raw.lower()))
    return tuple(out)


def tokenize(name: str) -> list[str]:
    """Lower-case ASCII tokens of a column (or table) name; see the module docstring."""
    return list(_tokenize(name))


@dataclass(frozen=True)
class NameMatch:
    """What the column name says. ``ambiguous`` matches need values (or, for person names, a
    table of persons) to count; ``qualifier`` is the person word that settled a name-like head."""

    pii_class: str
    term: str
    lang: str
    ambiguous: bool
    qualifier: str | None = None

    def describe(self) -> str:
        lang = "" if self.lang == "intl" else f" ({self.lang.replace('/', ', ')})"
        if self.qualifier:
            return f"name matches '{self.term}'{lang} qualified by '{self.qualifier}'"
        return f"name matches '{self.term}'{lang}"


def _find_phrases(tokens: tuple[str, ...]) -> list[tuple[int, int, Phrase]]:
    """Non-overlapping phrase occurrences, longest first, as (start, end, phrase)."""
    found = []
    for i in range(len(tokens)):
        for j in range(min(len(tokens), i + MAX_PHRASE), i, -1):
            phrase = PHRASES.get(tokens[i:j])
            if phrase:
                found.append((i, j, phrase))
    found.sort(key=lambda m: (-(m[1] - m[0]), -m[0]))
    taken: set[int] = set()
    chosen = []
    for i, j, phrase in found:
        if taken.isdisjoint(range(i, j)):
            chosen.append((i, j, phrase))
            taken.update(range(i, j))
    chosen.sort(key=lambda m: m[0])
    return chosen


def _neighbour(tokens: tuple[str, ...], index: int, step: int) -> str | None:
    """The first non-filler, non-digit token from `index` going `step` (-1 or +1)."""
    while 0 <= index < len(tokens):
        tok = tokens[index]
        if tok not in _FILLERS and not tok.isdigit():
            return tok
        index += step
    return None


def match_name(name: str) -> NameMatch | None:
    """The PII class a column name announces, or None (see the module docstring)."""
    tokens = _tokenize(name)
    matches = _find_phrases(tokens)
    for i, j, phrase in reversed(matches):
        after = [t for t in tokens[j:] if not t.isdigit()]
        before = [t for t in tokens[:i] if not t.isdigit()]
        if any(t in _TRAILING_STOP for t in after):
            continue
        if before and before[0] in _LEADING_STOP:
            continue
        if len(phrase.tokens) == 1 and phrase.tokens[0] in _ADDRESS_HEADS:
            quals = [q for q in (_neighbour(tokens, i - 1, -1), _neighbour(tokens, j, 1)) if q]
            if any(q in THING_WORDS for q in quals):
                return None
        if len(phrase.tokens) == 1 and phrase.tokens[0] in _NAME_HEADS:
            quals = [q for q in (_neighbour(tokens, i - 1, -1), _neighbour(tokens, j, 1)) if q]
            person = next((q for q in quals if q in PERSON_WORDS), None)
            if person:
                return NameMatch("person_name", phrase.text, phrase.lang, False, person)
            if any(q in VOCABULARY for q in quals):
                return None  # product_name, hostname, nombre_producto: a thing's name
            return NameMatch("person_name", phrase.text, phrase.lang, True)
        return NameMatch(phrase.pii_class, phrase.text, phrase.lang, phrase.ambiguous)
    return None


def name_kind(name: str) -> str | None:
    """"categorical" (status, type, ...), "free_text" (description, notes, ...) or None, from
    the column name's last word."""
    words = [t for t in _tokenize(name) if not t.isdigit()]
    if not words:
        return None
    if words[-1] in CATEGORICAL_WORDS:
        return "categorical"
    if words[-1] in FREE_TEXT_WORDS:
        return "free_text"
    return None


def is_person_table(table: str | None) -> bool:
    """Whether a table's name says its rows are persons (customers, kunden, utenti, ...)."""
    return bool(table) and any(t in PERSON_WORDS for t in _tokenize(table or ""))
