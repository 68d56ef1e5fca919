"""pgwarden.yaml validation (agent/policy/schema.py): positions, messages, canonical form.

No database here; plan/apply are in test_policy_apply.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.policy.schema import ACTIONS, RULES, PolicyFileError, load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pg_extension" / "python"))

from pgwarden_ext import policy as server_policy  # noqa: E402

VALID = """\
version: 1
protect:
  - name: core
    tables: [app.customers, "app.order*"]
    columns: [id]
    rules:
      max_rows: {statement: 500, transaction: 5000}
      opaque_write: allow
principals:
  - name: migrations
    match: {roles: [migrator]}
    protect: [core]
    rules: {no_drop: allow, max_rows: {statement: off}}
"""


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(PolicyFileError) as e:
        load(text)
    return [(p.line, p.col, p.path, p.message) for p in e.value.problems]


def test_valid_file_gives_the_canonical_document() -> None:
    pol = load(VALID)
    core = pol.doc["protect"][0]
    assert core["rules"]["require_where"] == "block"  # defaults fill what is not said
    assert core["rules"]["opaque_write"] == "allow"
    assert core["rules"]["max_rows"] == {"action": "block", "statement": 500,
                                         "transaction": 5000, "opaque_statement": None}
    assert pol.doc["principals"][0] == {
        "name": "migrations", "match": {"roles": ["migrator"], "member_of": [], "identities": []},
        "protect": ["core"], "rules": {"no_drop": "allow", "max_rows": {"statement": None}}}
    server_policy.check(pol.doc)  # the extension accepts exactly this shape
    assert len(pol.sha256) == 64


def test_client_and_server_agree_on_rules_and_actions() -> None:
    assert RULES == server_policy.RULES
    assert ACTIONS == server_policy.ACTIONS


def test_bad_action_names_line_and_column() -> None:
    text = VALID.replace("opaque_write: allow", "opaque_write: blok")
    assert problems(text) == [(8, 7, "protect[0].rules.opaque_write",
                               "expected one of block, approve, allow, off, got 'blok'")]


def test_unknown_rule_suggests_the_closest() -> None:
    text = VALID.replace("opaque_write: allow", "require_wher: block")
    [(line, col, path, msg)] = problems(text)
    assert (line, col, path) == (8, 7, "protect[0].rules.require_wher")
    assert "did you mean 'require_where'" in msg


def test_every_problem_is_reported_at_once() -> None:
    text = VALID.replace("version: 1", "version: 2").replace("statement: 500",
                                                             "statement: -3")
    got = problems(text)
    assert [(p[0], p[2]) for p in got] == [(1, "version"),
                                          (7, "protect[0].rules.max_rows.statement")]


def test_approve_is_an_action_except_for_row_by_row_rules() -> None:
    doc = load(VALID.replace("no_drop: allow", "no_drop: approve")).doc
    assert doc["principals"][0]["rules"]["no_drop"] == "approve"
    [(line, _, path, msg)] = problems(VALID.replace("no_drop: allow",
                                                    "protected_columns: approve"))
    assert (line, path) == (13, "principals[0].rules.protected_columns")
    assert "row by row" in msg


def test_approvals_section() -> None:
    doc = load(VALID + "approvals:\n  request_ttl: 2h\n  grant_ttl: 90s\n"
                       "  reviewers: {roles: [alice, 'sec-*'], member_of: [secops]}\n").doc
    assert doc["approvals"] == {"request_ttl": 7200, "grant_ttl": 90,
                                "reviewers": {"roles": ["alice", "sec-*"],
                                              "member_of": ["secops"]}}
    [(_, _, path, msg)] = problems(VALID + "approvals:\n  grant_ttl: soon\n")
    assert path == "approvals.grant_ttl" and "duration" in msg


def test_principal_scope_must_name_a_protect_entry() -> None:
    [(line, _, path, msg)] = problems(VALID.replace("protect: [core]", "protect: [cor]"))
    assert (line, path) == (12, "principals[0].protect[0]")
    assert "'cor'" in msg


def test_yaml_syntax_error_has_a_position() -> None:
    [(line, col, path, msg)] = problems("version: 1\nprotect:\n  - name: [unclosed\n")
    assert line >= 3 and col > 0 and path == "" and msg.startswith("YAML syntax")


def test_duplicate_keys_are_refused() -> None:
    [(line, _, _, msg)] = problems(VALID.replace("    columns: [id]\n",
                                                 "    columns: [id]\n    columns: [x]\n"))
    assert line == 6 and "duplicate" in msg.lower()


def test_entry_must_protect_something_and_names_are_unique() -> None:
    text = ("version: 1\nprotect:\n  - name: a\n    columns: [id]\n"
            "  - name: a\n    tables: [t]\n")
    got = problems(text)
    assert ("protect[0]", "protects nothing: give tables, schemas or functions") in \
        [(p[2], p[3]) for p in got]
    assert ("protect[1].name", "duplicate name 'a'") in [(p[2], p[3]) for p in got]


def test_bad_table_pattern() -> None:
    [(_, _, path, msg)] = problems(VALID.replace('"app.order*"', '"a.b.c"'))
    assert path == "protect[0].tables[1]" and "table pattern" in msg


def test_cli_validate_exit_codes_and_json(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(VALID)
    bad.write_text(VALID.replace("opaque_write: allow", "opaque_write: blok"))
    runner = CliRunner()
    ok = runner.invoke(main, ["policy", "validate", "--file", str(good)])
    assert ok.exit_code == 0 and "valid" in ok.output
    res = runner.invoke(main, ["policy", "validate", "--file", str(bad), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.output)
    assert out["valid"] is False
    assert out["problems"][0]["line"] == 8 and out["problems"][0]["column"] == 7
    text = runner.invoke(main, ["policy", "validate", "--file", str(bad)])
    assert text.exit_code == 1 and f"{bad}:8:7: protect[0].rules.opaque_write" in text.output
    missing = runner.invoke(main, ["policy", "validate", "--file", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read" in missing.output
    usage = runner.invoke(main, ["policy", "plan", "--file", str(good)])
    assert usage.exit_code == 2  # --dsn missing


@pytest.mark.parametrize("group", ["db", "policy", "audit"])
def test_every_command_has_help(group: str) -> None:
    runner = CliRunner()
    top = runner.invoke(main, [group, "--help"])
    assert top.exit_code == 0 and "Exit status" in top.output
    from agent.cli import COMMANDS
    import importlib

    module, attr = COMMANDS[group].split(":")
    grp = getattr(importlib.import_module(module), attr)
    for name, cmd in grp.commands.items():
        assert cmd.help and len(cmd.help) > 40, f"{group} {name} lacks help"
        res = runner.invoke(main, [group, name, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output
