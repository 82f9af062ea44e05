"""Rerun the mutations listed in tests/README.md: `python tools/mutate.py [PATH ...]`.

With paths (`zoo/cpu.py`), only the mutations of those files run.

Each mutation breaks one line of the code on purpose, runs the test meant to catch it, and puts
the line back; a mutation the test does not catch is reported and makes the exit status 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (file, original text, broken text, the test that must fail)
MUTATIONS = [
    ("zoo/data/stats.py", "    structure[1] = True\n", "    structure[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]\n",
     "tests/test_layouts.py::test_layout_stats_on_hand_built_maps"),
    ("zoo/data/stats.py", "LEFT_COLUMNS = 14", "LEFT_COLUMNS = 13", "tests/test_layouts.py::test_layout_stats_on_hand_built_maps"),
    ("zoo/data/layouts.py", "SLOT_JITTER = 10", "SLOT_JITTER = 9", "tests/test_layouts.py::test_m2nist_layout_edges"),
    ("zoo/data/layouts.py", "& (lefts + GLYPH <= w)", "& (lefts >= 0)", "tests/test_layouts.py::test_m2nist_layout_glyph_counts"),
    ("zoo/cpu.py", "max(conv.dilation) >= 2 and (conv.in_channels // conv.groups) % 16 != 0", "max(conv.dilation) >= 2",
     "tests/test_bf16.py::test_fault_rule_covers_exactly_the_faulty_shapes"),
    ("zoo/cpu.py", "        and has_bf16_fault_shape(conv)\n        and not isinstance", "        and False\n        and not isinstance",
     "tests/test_bf16.py::test_plain_loop_bf16_autocast_gradients_match_fp32_as_nchw_does[vgg7_dilated]"),
    ("zoo/cpu.py", "        and torch.is_grad_enabled()\n", "",
     "tests/test_bf16.py::test_fault_rule_costs_nothing_where_the_fault_cannot_occur"),
    ("zoo/cpu.py", "not all(e < 0.05 for e in errors)", "False",
     "tests/test_bf16.py::test_probe_agrees_with_the_standalone_reproduction"),
    ("zoo/layers/heads.py", "*(pool(x) for pool in self.pools)", "*(0 * pool(x) for pool in self.pools)",
     "tests/test_layers.py::test_context_head_is_the_window_mean_by_hand"),
    ("zoo/layers/conv.py", "            return cpu.fused_conv_bn_act(self.conv, getattr(self, \"bn\", None), hasattr(self, \"act\"), x)\n        return super().forward(x)\n",
     "            return cpu.fused_conv_bn_act(self.conv, getattr(self, \"bn\", None), hasattr(self, \"act\"), x)\n        return (self.act(self.conv(x)) if torch.compiler.is_compiling() else super().forward(x))\n",
     "tests/test_checkpoint.py::test_torch_export_with_dynamic_size[vgg4_dilated]"),
    ("zoo/training/callbacks.py", "if self.target == 0 or epoch < self.start_epoch:", "if self.target == 0:",
     "tests/test_training.py::test_pruning_waits_for_its_epoch_then_zeroes_the_smallest_weights[False]"),
    ("zoo/training/callbacks.py", "use_global_unstructured=not self.per_layer,", "use_global_unstructured=True,",
     "tests/test_training.py::test_pruning_waits_for_its_epoch_then_zeroes_the_smallest_weights[True]"),
    ("zoo/training/module.py", "finite = all(bool(torch.isfinite(t).all()) for t in state if t.is_floating_point())",
     "finite = True", "tests/test_training.py::test_diverged_weights_are_not_kept"),
    ("zoo/training/module.py", "(self.trainer.default_root_dir)\n        where = {\"epoch\": self.current_epoch, \"step\": self.global_step}",
     "(self.trainer.default_root_dir)\n        where = {\"epoch\": self.current_epoch, \"step\": self.global_step - 1}",
     "tests/test_training.py::test_non_finite_loss_stops_and_keeps_the_weights_before_the_bad_step"),
    ("zoo/data/datasets.py", "state = np.random.SeedSequence([self.seed, epoch, int(i)]).generate_state(1)[0]",
     "state = np.random.randint(2**31)",
     "tests/test_data.py::test_augmentation_comes_from_its_own_seed_not_the_global_rngs"),
    ("zoo/training/losses.py", "return 1 - dice.mean()", "return 1 - dice[onehot.sum(dims) > 0].mean()",
     "tests/test_entry_points.py::test_dice_loss_by_hand"),
    ("zoo/attribution.py", "attr.GuidedBackprop(score)", "attr.Deconvolution(score)",
     "tests/test_explain.py::test_one_relu_layer_by_hand[guided]"),
    ("zoo/attribution.py", "if method in RELU_RULES and found:", "if False:",
     "tests/test_explain.py::test_relu_rules_name_the_layer_they_cannot_explain"),
    ("zoo/models/base.py", "            m.training = training", "            m.training = modes[0][1]",
     "tests/test_explain.py::test_the_model_comes_back_unchanged"),
    ("zoo/training/module.py", "    if cls is not None and issubclass(cls, OneCycleLR) and unset:",
     "    if cls is not None and issubclass(cls, OneCycleLR) and False:",
     "tests/test_training.py::test_a_one_cycle_left_without_a_length_runs_over_the_whole_fit"),
    ("zoo/checkpoint.py", '"init_args": {"lr": lr, "weight_decay": decay}}', '"init_args": {"lr": 1e-3, "weight_decay": decay}}',
     "tests/test_train_cli.py::test_a_checkpoint_of_the_string_option_era_still_loads"),
    ("zoo/models/base.py", "        if self.features_frozen:\n            self.features.eval()\n", "",
     "tests/test_training.py::test_freeze_features_trains_only_the_head"),
    ("tools/readme_layout.py", "        if name in active:\n", "        if False:\n",
     "tests/test_architecture.py::test_a_cycle_is_found_also_through_an_import_inside_a_function"),
    ("zoo/cpu.py", "(conv.in_channels // conv.groups) % 16", "conv.in_channels % 16",
     "tests/test_bf16.py::test_own_convolutions_get_the_protection[32-32]"),
    ("zoo/cpu.py", "conv.weight.clone(memory_format=torch.contiguous_format)", "conv.weight.contiguous()",
     "tests/test_bf16.py::test_own_convolutions_get_the_protection[24-24]"),
    ("zoo/cpu.py", "    if not (_fast_paths and eager_inference(x)):", "    if not (_fast_paths and eager_inference(x.detach())):",
     "tests/test_shift_stitch.py::test_training_pooling_routes_each_window_gradient_to_one_switch"),
    ("zoo/cpu.py", "        out = torch.maximum(out, rows[..., i : i + h, :])",
     "        out = torch.maximum(out, rows[..., i - 1 : i - 1 + h, :])",
     "tests/test_shift_stitch.py::test_inference_pooling_equals_reference_exactly"),
    ("zoo/layers/pool.py", "wide = torch.promote_types(x.dtype, torch.float32)", "wide = torch.float32",
     "tests/test_layers.py::test_box_mean_equals_window_means"),
    ("zoo/layers/pool.py", "dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else wide", "dtype = wide",
     "tests/test_layers.py::test_box_mean_sums_bf16_in_bf16[False]"),
    ("zoo/layers/pool.py", "dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else wide",
     "dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else wide",
     "tests/test_layers.py::test_box_mean_sums_other_floats_in_fp32[dtype0]"),
    ("zoo/training/module.py", "self.trainer.ckpt_path is None and self.initialised_from is None:", "self.trainer.ckpt_path is None:",
     "tests/test_training.py::test_init_from_is_what_validate_and_test_score_and_a_fit_tests_what_it_trained"),
    ("zoo/training/callbacks.py", "stem, tested = \"test_results\", trainer.ckpt_path or pl_module.initialised_from",
     "stem, tested = \"test_results\", pl_module.initialised_from",
     "tests/test_train_cli.py::test_train_py_tests_and_resumes_a_string_option_checkpoint"),
]  # fmt: skip


def main(paths: list[str]) -> int:
    missed = 0
    for path, old, new, test in MUTATIONS:
        if paths and path not in paths:
            continue
        file = ROOT / path
        source = file.read_text()
        if source.count(old) != 1:
            print(f"{path}: the text to break is not there once (the code changed): {old.strip()!r}")
            missed += 1
            continue
        file.write_text(source.replace(old, new))
        try:
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", test], cwd=ROOT, capture_output=True, text=True
            )
        finally:
            file.write_text(source)
        caught = run.returncode != 0
        missed += not caught
        print(f"{'caught' if caught else 'NOT CAUGHT'}: {path}: {old.strip()!r} -> {new.strip()!r} ({test})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
