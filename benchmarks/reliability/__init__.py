"""The reliability checklist's fault and fuzz campaigns, run by benchmarks/bench_reliability.py.

One module per campaign (checkpoints, formats, kills, resume, payloads, spikes, huge_line, serve,
tokenizers, word2vec, pytest_items), helpers they share in common, the checklist in items, the report in table.

To add a campaign: a module here with `campaign_xxx(work: Path, quick: bool) -> list[dict]` that
returns one `common.row(...)` per checklist id it measures (scratch files under `work`; `quick`
runs smaller counts); its import and one line in `campaigns.CAMPAIGNS` (plus `ALIASES` for the
other ids its rows cover); and the item's entry in `items.py` (drop it from NOT_MEASURED).
"""
