"""`wgmtp check`: the cross-GPU smoke test (README, "Check an adapter").

* cases/      the op suite: every kernel against its numpy twin over a fixed grid of shapes and
              weight types, the batch-invariance suite and snapshot rollback, as named cases;
              one module per kernel family (mirrors wgmtp/kernels/), common.py for what they share;
* compare.py  the one element-wise error (NaN never passes silently) and the shape of an op's
              comparison;
* twins.py    the numpy twin of each recorded op kind, built from the record alone;
* trace.py    op-by-op checking of a running model from the ops its programs recorded
              (WGMTP_CHECK=1, `wgmtp check -m`);
* worker.py   runs cases in child processes (one per adapter variant) that journal each case
              before and after it runs, so a crash or a hang is reported naming the case, and the
              Python API of the runner (`run_suite`);
* report.py   the tables, the summary line and the `--json` document (its schema is documented
              there);
* model.py    model mode (`-m`).

The command is wgmtp/cli/check.py.
"""
