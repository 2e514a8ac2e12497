"""What ships in data/: the small pretrained MAE and the measured results, with their provenance."""

import hashlib
import json

import torch

from mae_course import build_model, load_model
from mae_course.data import BuiltinShapes, shipped_checkpoint, shipped_dir, shipped_results
from mae_course.transforms import eval_transform


def test_the_shipped_checkpoint_is_what_its_provenance_says():
    path = shipped_checkpoint()
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == provenance["sha256"]
    assert path.stat().st_size == provenance["size_bytes"] < 4_000_000  # a few MB at most
    assert provenance["command"].startswith("python -m mae_course pretrain")
    assert provenance["trained_on"]["git_commit"] and provenance["trained_on"]["hardware"]["device"]
    log = [json.loads(line) for line in path.with_name(path.stem + ".log.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in log if "train_loss" in r][-1] == provenance["final_train_loss"]


def test_the_shipped_model_has_learned_to_reconstruct():
    model = load_model(shipped_checkpoint())
    assert model.config["name"] == "mae_vit_mini_patch4_32"
    torch.manual_seed(0)
    untrained = build_model("mae_vit_mini_patch4_32")
    test = BuiltinShapes("test", 32, transform=eval_transform(32, crop_fraction=1.0))
    imgs = torch.stack([test[i][0] for i in range(64)])
    noise = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained_loss = model(imgs, noise=noise)[0].item()
        untrained_loss = untrained(imgs, noise=noise)[0].item()
    assert trained_loss < 0.5 * untrained_loss


def test_shipped_results_carry_their_provenance():
    paths = sorted((shipped_dir() / "results").glob("*.json"))
    assert {p.stem for p in paths} >= {"evaluation", "figure5", "table2_cpu"}
    for path in paths:
        results = json.loads(path.read_text())
        assert results["git_commit"] and results["hardware"]["device"] and results["hardware"]["torch"], path.name
        assert results.get("runs") or results.get("rows"), path.name


def test_the_shipped_figure5_sweep_is_complete():
    """At least 6 masking ratios between 10% and 90%, each pretrained, probed and fine-tuned."""
    sweep = json.loads(shipped_results("figure5").read_text())
    ratios = sorted(float(r) for r in sweep["runs"])
    assert len(ratios) >= 6 and ratios[0] <= 0.1 and ratios[-1] >= 0.9
    for run in sweep["runs"].values():
        assert {"pretrain", "linprobe", "finetune"} <= set(run)
        assert 0 < run["linprobe"]["top1"] <= 100 and 0 < run["finetune"]["top1"] <= 100
        assert run["pretrain"]["wall_time_s"] > 0
    assert sweep["settings"]["pretrain"]["epochs"] >= 20


def test_the_shipped_table2_measurement_is_a_ratio_of_one_run():
    table2 = json.loads(shipped_results("table2_cpu").read_text())
    assert [row["decoder_depth"] for row in table2["rows"]] == [8, 1]
    for row in table2["rows"]:
        assert row["speedup"] == row["mask_tokens_in_encoder"]["step_s"] / row["asymmetric"]["step_s"] > 1


def test_the_shipped_evaluation_has_every_measure_and_baseline():
    evaluation = json.loads(shipped_results("evaluation").read_text())
    assert {"linprobe", "linprobe_random", "finetune", "finetune_scratch", "partial_1", "partial_mlp"} <= set(
        evaluation["runs"]
    )
    assert all(run["wall_time_s"] > 0 for run in evaluation["runs"].values())
