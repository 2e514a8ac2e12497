import pytest

from mae_course.experiments.flops import block_flops, mae_flops
from mae_course.model.registry import MODEL_CONFIGS, build_model


def test_block_formula_by_hand():
    # T = 10 tokens, D = 8, MLP ratio 4: qkv 2*10*8*24, proj 2*10*8*8, MLP 2*(10*8*32)*2, attention 4*100*8
    expected = 2 * 10 * 8 * 24 + 2 * 10 * 8 * 8 + 2 * 10 * 8 * 32 * 2 + 4 * 100 * 8
    assert block_flops(10, 8) == expected


def test_vit_base_step_is_about_58_gflops():
    flops = mae_flops(MODEL_CONFIGS["mae_vit_base_patch16"])  # encoder on 1 + 49 tokens, decoder on 197
    assert flops.train_step / 1e9 == pytest.approx(58.7, abs=0.1)
    assert flops.encoder == 12 * block_flops(50, 768)
    assert flops.decoder > flops.encoder  # at 75% masking the 8-block decoder on 197 tokens costs more


def test_mask_tokens_in_the_encoder_cost_more_the_deeper_the_encoder():
    large = MODEL_CONFIGS["mae_vit_large_patch16"]
    ratio8 = mae_flops(large, mask_token_in_encoder=True).train_step / mae_flops(large).train_step
    ratio1 = (
        mae_flops({**large, "decoder_depth": 1}, mask_token_in_encoder=True).train_step
        / mae_flops({**large, "decoder_depth": 1}).train_step
    )
    assert 3.0 < ratio8 < ratio1 < 4.0  # the paper measured 2.8x and 3.7x in wall-clock time


def test_reads_a_models_own_config():
    model = build_model("mae_vit_mini_patch4_32", mask_token_in_encoder=True)
    assert mae_flops(model.config).encoder == 6 * block_flops(65, 128)
    assert mae_flops(model.config, mask_token_in_encoder=False).encoder == 6 * block_flops(17, 128)
