"""The reliability checklist's fault and fuzz campaigns, run by benchmarks/bench_reliability.py.

One module per campaign (checkpoints, formats, kills, resume, payloads, spikes, huge_line, serve,
tokenizers, word2vec, pytest_items); what they share: their environment (paths, fixtures, process
set-up) in environment, training runs in runs, a live server in served, the checklist in items, the
result row and the report in table.

To add a campaign: a module here with `campaign_xxx(work: Path, quick: bool) -> list[dict]` that
returns one `table.row(...)` per checklist id it measures (scratch files under `work`; `quick`
runs smaller counts); its import and one line in `campaigns.CAMPAIGNS` (plus `ALIASES` for the
other ids its rows cover); and the item's entry in `items.py` (drop it from NOT_MEASURED).
"""
