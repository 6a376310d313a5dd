"""`wgmtp check`: the cross-GPU smoke test (DESIGN.md, "wgmtp check").

* opsuite.py  the op suite: every kernel against its numpy twin over a fixed grid of shapes and
              weight types, the batch-invariance suite and snapshot rollback, as named cases;
* worker.py   runs cases in child processes (one per adapter variant) that journal each case
              before and after it runs, so a crash or a hang is reported naming the case, and the
              Python API of the runner (`run_suite`);
* report.py   the tables, the summary line and the `--json` document (its schema is documented
              there);
* model.py    model mode (`-m`), when present.

The CLI is wgmtp/check_cmd.py.
"""
