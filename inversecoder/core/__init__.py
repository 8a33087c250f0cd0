"""The core every package builds on: backend protocol and backends, result cache, prompts, benchmark data,
sandbox and verdicts, file I/O, the output layout and the config schema.

`builders`, `trainers`, `eval` and `hub_cards` import from here and never from each other; `workflow`
(with `cli` and `plan`) alone sits on top and may import anything.
"""
