import json

from mae_course.cli import main
from mae_course.experiments.table2 import Table2Config, table2, table2_text

NARROW = {"embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16, "decoder_num_heads": 2}


def test_table2_times_both_encoders_in_one_run(monkeypatch):
    """Both encoders really run and are really timed, three rounds each; the times the row is made of are
    then replaced by ones the test sets, so that every field can be checked by hand. Per round, asymmetric
    1, 2, 4 s, with mask tokens 3, 4, 20 s: the ratios 3, 2, 5, so a speed-up of 3 (their median), from 2
    to 5, over median step times of 2 s and 4 s (whose own ratio, 2, is not the speed-up)."""
    from mae_course.experiments import table2 as module
    from mae_course.experiments.timing import alternating_seconds

    measured = []

    def timed_then_faked(contenders, rounds, warmup):
        seconds = alternating_seconds(contenders, rounds=rounds, warmup=warmup)
        measured.append(seconds)
        return {"asymmetric": [1.0, 2.0, 4.0], "mask_tokens_in_encoder": [3.0, 4.0, 20.0]}

    monkeypatch.setattr(module, "alternating_seconds", timed_then_faked)
    cfg = Table2Config(
        model="mae_vit_mini_patch4_32",
        model_overrides=NARROW,
        decoder_depths=(2, 1),
        batch_size=4,
        steps=3,
        device="cpu",
    )
    results = table2(cfg)
    assert results["suite"] == "table2"
    assert [row["decoder_depth"] for row in results["rows"]] == [2, 1]
    assert [sorted(s) for s in measured] == [["asymmetric", "mask_tokens_in_encoder"]] * 2
    assert all(len(times) == 3 and min(times) > 0 for s in measured for times in s.values())
    for row in results["rows"]:
        assert row["asymmetric"]["step_s"] == 2.0 and row["mask_tokens_in_encoder"]["step_s"] == 4.0
        assert row["asymmetric"]["images_per_s"] == 2.0 and row["mask_tokens_in_encoder"]["images_per_s"] == 1.0
        assert (row["speedup"], row["speedup_low"], row["speedup_high"], row["rounds"]) == (3.0, 2.0, 5.0, 3)
        assert row["flop_ratio"] > 1.5  # 65 tokens instead of 17 in the encoder
    assert "2000 ms" in table2_text(results) and "3.00x" in table2_text(results)
    assert (
        results["rows"][1]["flop_ratio"] > results["rows"][0]["flop_ratio"]
    )  # a lighter decoder: the encoder weighs more
    assert "FLOP ratio" in table2_text(results) and results["hardware"]["torch"]


def test_bench_from_the_command_line(tmp_path, capsys):
    args = [
        "bench",
        "--model",
        "mae_vit_mini_patch4_32",
        "--model-overrides",
        json.dumps(NARROW),
        "--decoder-depths",
        "1",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "b.json"),
    ]
    assert main(args) == 0
    assert "speed-up" in capsys.readouterr().out and json.loads((tmp_path / "b.json").read_text())["suite"] == "table2"
    assert main([*args[:-2], "--steps", "0"]) == 2


def test_decoder_depth_in_the_overrides_is_one_clear_line(tmp_path, capsys):
    """It used to raise a TypeError (the depth given twice to the model)."""
    overrides = json.dumps({**NARROW, "decoder_depth": 1})
    args = [
        "bench",
        "--model",
        "mae_vit_mini_patch4_32",
        "--model-overrides",
        overrides,
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "b.json"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "varies decoder_depth itself (--decoder-depths" in err
    assert (
        main([*args[:-2], "--suite", "model", "--implementations", "plain", "--output", str(tmp_path / "m.json")]) == 0
    )


def test_the_contenders_take_turns_and_the_ratio_has_its_spread():
    """Timing A, then B, compares two moments of a busy machine: the rounds alternate instead."""
    from mae_course.experiments.timing import alternating_seconds, ratio

    order = []
    seconds = alternating_seconds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3, warmup=1)
    assert order == ["a", "b"] * 4 and [len(v) for v in seconds.values()] == [3, 3]
    r = ratio([2.0, 3.0, 9.0], [1.0, 1.0, 1.0])
    assert (r.median, r.low, r.high, r.rounds) == (3.0, 2.0, 9.0, 3) and "from 2.00x to 9.00x over 3 rounds" in str(r)
    results = table2(
        Table2Config(
            model="mae_vit_mini_patch4_32",
            model_overrides=NARROW,
            decoder_depths=(1,),
            batch_size=2,
            steps=3,
            device="cpu",
        )
    )
    row = results["rows"][0]
    assert row["rounds"] == 3 and row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
    assert "rounds:" in table2_text(results)
