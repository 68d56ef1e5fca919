"""pgwarden's database side, seen from the host: install the extension, talk to it.

    install   copy the extension files, the server-side Python package and a pinned sqlglot;
              CREATE EXTENSION; uninstall; status
    conn      connections with clear errors (`DbError`)
    testing   throwaway clusters with pgwarden installed, table checksums (tests and benches)
"""
