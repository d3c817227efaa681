"""The items that tests already measure: their pytest node ids, run once, outcomes and figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .environment import REPORTS, ROOT
from .table import row


# pytest node ids (relative to tests/) that measure an item fully or partly.
TESTS = {
    "A3": ["unit/model/test_pretrained.py::test_truncation_and_bit_flips_raise_typed_errors",
           "unit/train/test_checkpoint.py::test_corrupted_checkpoint_is_refused"],
    "A4": ["unit/test_artifacts.py::test_disk_full_during_commit_keeps_previous"],
    "A5": ["unit/train/test_checkpoint.py::test_retention_keeps_the_newest"],
    "A6": ["unit/train/test_loop.py::test_two_runs_in_one_directory_are_refused"],
    "A7": ["unit/train/test_format_compatibility.py"],
    "A8": ["unit/train/test_checkpoint.py::test_discovery_skips_junk"],
    "B2": ["unit/train/test_loop.py::test_resume_is_bitwise_exact_with_dropout",
           "unit/train/test_loop.py::test_resume_with_muon_is_bitwise_exact"],
    "B4": ["unit/data/test_samplers.py::test_causal_resume_is_exact",
           "unit/data/test_samplers.py::test_masked_resume_and_padding",
           "unit/tasks/test_batching.py::test_batches_are_a_pure_function_of_the_step"],
    "B5": ["unit/train/test_loop.py::test_resume_is_bitwise_exact_with_dropout",
           "integration/test_pretrain.py::test_masked_lm_run_resumes_though_its_pooler_has_no_optimizer_state",
           "unit/generate/test_config_and_sampling.py::test_seeds_reproduce_and_differ"],
    "B6": ["unit/train/test_ema.py::test_resume_restores_the_average_bit_for_bit",
           "unit/train/test_select.py::test_resume_keeps_the_selection_state"],
    "B7": ["unit/train/test_loop.py::test_resume_with_changed_architecture_names_the_field",
           "unit/train/test_loop.py::test_checkpoint_of_another_run_is_refused"],
    "B8": ["unit/train/test_golden.py::test_clm_losses_equal_the_golden_curve"],
    "C3": ["unit/test_static_bans.py::test_torch_is_at_least_the_floor"],
    "C4": ["interop/test_hf_parity.py::test_refuses_custom_code_and_pickle"],
    "C6": ["unit/test_static_bans.py::test_no_banned_calls_in_lmlab"],
    "C7": ["unit/test_artifacts.py::test_tampering_is_detected",
           "unit/tokenizer/test_tokenizers.py::test_modified_tokenizer_json_is_detected",
           "unit/embeddings/test_embed_vectors.py::test_artifact_round_trip_and_corruption",
           "unit/data/test_shards.py::test_tokenizer_mismatch_is_refused"],
    "C5": ["unit/generate/test_chat.py::test_templates_that_reach_python_internals_are_refused"],
    "D1": ["unit/train/test_loop.py::test_nan_loss_stops_before_the_step",
           "integration/test_pretrain.py::test_a_diverging_run_exits_with_the_divergence_code"],
    "D2": ["unit/train/test_loop.py::test_nan_loss_skip_policy_counts_and_continues"],
    "D3": ["unit/train/test_loop.py::test_inf_in_one_gradient_is_caught_before_the_step"],
    "D4": ["unit/train/test_spike.py"],
    "D5": ["unit/train/test_loop.py::test_consecutive_bad_steps_stop_with_skip_policy"],
    "D6": ["unit/model/test_attention.py::test_fully_padded_row_gives_zeros_not_nan_on_both_paths",
           "unit/model/test_transformer.py::test_encoder_padding_does_not_change_real_tokens"],
    "D7": ["unit/model/test_attention.py::test_large_scores_stay_finite_in_fp32_and_bf16"],
    "E1": ["unit/corpus/test_robustness.py::test_random_bytes_decode_to_valid_text_under_lenient_policies",
           "unit/corpus/test_read.py::test_replace_counts_every_injected_byte_and_skip_counts_lines"],
    "E2": ["unit/corpus/test_read.py::test_encodings_detected",
           "unit/corpus/test_read.py::test_empty_binary_and_nul_files",
           "unit/corpus/test_read.py::test_overlong_line_skipped_and_counted_without_buffering_it"],
    "E3": ["unit/corpus/test_robustness.py::test_the_cleaner_never_imports_torch",
           "unit/corpus/test_robustness.py::test_512mib_line_is_skipped_in_flat_memory"],
    "E4": ["unit/data/test_shards.py::test_truncated_shard_and_bad_manifest_are_named",
           "unit/data/test_shards.py::test_corrupt_corpus_line_fails_or_is_skipped_and_counted"],
    "E5": ["unit/data/test_shards.py::test_large_vocab_uses_uint32_and_forcing_uint16_is_refused",
           "unit/data/test_shards.py::test_choose_dtype"],
    "E6": ["unit/corpus/test_pipeline.py::test_output_identical_for_any_worker_count"],
    "E7": ["unit/tokenizer/test_tokenizers.py::test_bpe_round_trip_is_exact_on_any_text",
           "unit/tokenizer/test_tokenizers.py::test_char_round_trip_and_unknowns",
           "unit/tokenizer/test_fuzz_slow.py::test_fifty_thousand_fuzz_strings"],
    "E8": ["unit/generate/test_stream.py::test_stream_pieces_are_whole_characters",
           "unit/generate/test_stream.py::test_random_model_stream_concatenates_to_decode",
           "unit/tokenizer/test_stream_and_eval.py::test_bpe_stream_random_ids_match_decode"],
    "E9": ["unit/datasets/test_datasets.py::test_schema_errors_name_file_and_line",
           "unit/tasks/test_seq2seq.py::test_parallel_files_must_align",
           "unit/tasks/qa/test_task.py::test_bad_qa_input"],
    "E10": ["unit/datasets/test_datasets.py::test_qa_spans_checked_and_bad_ones_dropped",
            "unit/tasks/qa/test_task.py::test_answer_not_at_offset_is_counted_with_its_id",
            "unit/tasks/test_real_datasets.py::test_cmrc_spans_align_through_the_tokenizer"],
    "F1": ["unit/serve/test_hardening.py::test_default_bind_is_loopback_and_public_bind_needs_a_key"],
    "F2": ["unit/serve/test_hardening.py::test_cli_refuses_public_bind_without_key"],
    "F3": ["unit/serve/test_hardening.py::test_key_guards_every_route_but_health"],
    "F4": ["unit/serve/test_hardening.py::test_body_cap_413"],
    "F5": ["unit/serve/test_hardening.py::test_prompt_and_max_tokens_caps",
           "unit/serve/test_hardening.py::test_bad_parameters_are_4xx"],
    "F7": ["unit/serve/test_hardening.py::test_backpressure_429_with_retry_after"],
    "F8": ["unit/serve/test_hardening.py::test_timeout_504_and_stream_finish_reason"],
    "F9": ["unit/serve/test_hardening.py::test_disconnect_mid_stream_stops_decoding",
           "unit/serve/test_hardening.py::test_disconnect_drops_only_that_row",
           "unit/serve/test_hardening.py::test_client_gone_before_a_non_streamed_answer_stops_decoding"],
    "F10": ["unit/serve/test_openai_client.py::test_streamed_completion_equals_non_streamed",
            "unit/serve/test_openai_client.py::test_sse_ends_with_done"],
    "F11": ["unit/serve/test_hardening.py::test_model_names_are_an_allow_list"],
    "F13": ["unit/serve/test_hardening.py::test_logs_hold_no_keys_or_prompts"],
    "G1": ["unit/train/test_distributed_faults.py::test_sigkill_of_one_rank_under_torchrun_restarts_resumes_bitwise"],
    "G2": ["unit/train/test_distributed_faults.py::test_only_rank_0_writes_and_commits_before_releasing_the_others",
           "unit/train/test_distributed_faults.py::test_a_failure_while_rank_0_builds_the_data_ends_the_others"],
    "G3": ["unit/train/test_distributed_faults.py::test_a_non_finite_step_on_one_rank_is_one_decision_for_all"],
    "G5": ["unit/train/test_distributed_faults.py::test_a_stopped_peer_ends_the_others_within_the_timeout"],
    "H1": ["interop/test_hf_parity.py::test_import_then_export_parity",
           "interop/test_hf_parity.py::test_bert_padding_rows_match"],
    "H2": ["interop/test_hf_parity.py::test_export_then_greedy_continuations_equal"],
    "H3": ["unit/tokenizer/test_tokenizers.py::test_autotokenizer_gives_identical_ids"],
    "H4": ["interop/test_hf_parity.py::test_every_key_consumed_and_every_parameter_filled"],
    "I1": ["unit/model/test_attention.py::test_formula_equals_torch_sdpa_forward_and_grads",
           "unit/model/test_attention.py::test_multihead_equals_torch_multiheadattention"],
    "I2": ["unit/model/test_transformer.py::test_causality_future_tokens_do_not_change_the_past"],
    "I3": ["unit/model/test_transformer.py::test_kv_cache_equals_full_recomputation",
           "unit/generate/test_decode.py::test_cached_decoding_equals_full_recomputation"],
    "I4": ["unit/model/test_position.py"],
    "I5": ["unit/train/test_optim.py::test_groups_decay_matrices_only_and_match_torch"],
    "I6": ["unit/embeddings/test_embed_word2vec.py::test_skipgram_update_equals_sgd_on_the_sgns_loss_by_autograd"],
    "I7": ["unit/model/test_overfit.py"],
}
# Tests that take long: only in the full run.
SLOW_TESTS = {"unit/tokenizer/test_fuzz_slow.py::test_fifty_thousand_fuzz_strings",
              "unit/corpus/test_robustness.py::test_512mib_line_is_skipped_in_flat_memory",
              "unit/train/test_distributed_faults.py::test_sigkill_of_one_rank_under_torchrun_restarts_resumes_bitwise"}


def campaign_pytest(work: Path, quick: bool) -> list[dict]:
    import xml.etree.ElementTree as ET

    def exists(test: str) -> bool:  # a renamed test must not stop pytest from running the others
        path, _, name = test.partition("::")
        file = ROOT / "tests" / path
        return file.exists() and (not name or f"def {name}(" in file.read_text(encoding="utf-8"))

    missing = {t for tests in TESTS.values() for t in tests if not exists(t)}
    ids = sorted({t for tests in TESTS.values() for t in tests
                  if not (quick and t in SLOW_TESTS) and t not in missing})
    junit = work / "pytest.xml"
    figures_path = REPORTS / "reliability.json"
    figures_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
                    f"--junitxml={junit}", *[f"tests/{t}" for t in ids]], cwd=ROOT, env=env,
                   stdout=open(work / "pytest.log", "w"), stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - t0
    outcomes: dict[str, list[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        node = f"{path}::{case.get('name')}".removeprefix("tests/")
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
            elif child.tag == "skipped":
                status = "skipped"
        outcomes[node] = outcomes.get(node, []) + [status]
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    rows = []
    for item, tests in TESTS.items():
        cases, failed, skipped, figs = 0, [], 0, {}
        for test in tests:
            if quick and test in SLOW_TESTS:
                continue
            base = test.split("::")[0]
            name = test.split("::")[1] if "::" in test else ""
            for node, statuses in outcomes.items():
                node_base, _, node_name = node.partition("::")
                if node_base == base and (not name or node_name == name or node_name.startswith(name + "[")):
                    cases += len(statuses)
                    skipped += statuses.count("skipped")
                    if "failed" in statuses:
                        failed.append(node_name)
            for node, values in figures.items():
                if node.removeprefix("tests/").startswith(test):
                    figs[node.split("::")[-1]] = values
        lost = f"failed: {', '.join(failed)}" if failed else "none"
        gone = [t for t in tests if t in missing]
        if gone:
            failed += gone
            lost += f"; tests not found: {', '.join(gone)}"
        if skipped:
            lost += f"; skipped: {skipped}"
        if figs:  # the worst value of each figure over the test's cases
            merged: dict[str, list] = {}
            for values in figs.values():
                for k, v in values.items():
                    merged.setdefault(k, []).append(v)
            lost += "; figures (max over cases): " + ", ".join(
                f"{k} {max(v) if all(isinstance(x, (int, float)) for x in v) else sorted(set(map(str, v)))}"
                for k, v in merged.items())
        rows.append(row(item, cases, len(failed), lost, "pytest " + ", ".join(
            t.split("::")[-1] if "::" in t else t for t in tests if not (quick and t in SLOW_TESTS))))
    rows.append(row("pytest", sum(len(v) for v in outcomes.values()),
                    sum("failed" in v for v in outcomes.values()), f"{elapsed:.0f} s", "pytest"))
    return rows
