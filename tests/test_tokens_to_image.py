"""PACING's tokens -> image layout: placement, reversal, padding, the seed's 16×16 layout."""

import pytest
import torch

from patchbench.adapters.tokens_to_image import TokensToImage
from patchbench.models.pacing import Pacing, PacingConfig


def test_each_token_lands_in_its_pixel_block():
    C, p, N = 3, 4, 9  # 3×3 grid, 12×12 image
    layer = TokensToImage(n_positions=N, channels=C, patch=p)
    emb = torch.arange(N, dtype=torch.float32)[None, :, None].expand(1, N, C * p * p).clone()
    img = layer(emb)
    assert img.shape == (1, C, 12, 12)
    for k in range(N):
        r, c = divmod(k, 3)
        block = img[0, :, r * p:(r + 1) * p, c * p:(c + 1) * p]
        assert torch.all(block == k), f"token {k} not at block ({r}, {c})"


def test_patch_internal_layout_is_channel_row_col():
    C, p = 3, 2
    layer = TokensToImage(n_positions=4, channels=C, patch=p)
    emb = torch.zeros(1, 4, C * p * p)
    emb[0, 3] = torch.arange(C * p * p, dtype=torch.float32)  # token 3 -> cell (1, 1)
    img = layer(emb)
    expect = torch.arange(C * p * p, dtype=torch.float32).view(C, p, p)
    assert torch.equal(img[0, :, 2:4, 2:4], expect)


def test_all_layout_places_every_token_of_1024():
    layer = TokensToImage(n_positions=1024, channels=3, patch=16, layout="all")
    assert layer.grid == 32 and layer.image_size == 512
    emb = torch.randn(1, 1024, 768)
    img = layer(emb)
    assert img.shape == (1, 3, 512, 512)
    assert torch.equal(img[0, :, 496:512, 496:512], emb[0, 1023].view(3, 16, 16))


def test_seed_layout_keeps_first_256_only():
    layer = TokensToImage(n_positions=1024, channels=3, patch=16, layout="seed")
    emb = torch.randn(2, 1024, 768)
    img = layer(emb)
    assert img.shape == (2, 3, 256, 256)
    assert torch.equal(img[1, :, 240:256, 240:256], emb[1, 255].view(3, 16, 16))


def test_non_square_count_pads_empty_cells_with_zero():
    layer = TokensToImage(n_positions=5, channels=3, patch=2)
    img = layer(torch.ones(1, 5, 12))
    assert layer.grid == 3
    assert img[0, :, 2:4, 4:6].abs().sum() == 0  # cell 5 is empty
    assert torch.all(img[0, :, 2:4, 2:4] == 1)  # cell 4 is token 4


def test_pacing_reverses_and_pads_with_pad_id():
    cfg = PacingConfig(vocab_size=50, n_positions=16, patch=8, depths=[1, 1, 1, 1], dims=[8, 8, 8, 8], pad_id=49)
    model = Pacing(cfg)
    ids = torch.tensor([[1, 2, 3]])
    emb = model.embed(ids)  # (1, 16, 192)
    pos = model.wpe.weight
    tok = model.wte.weight
    assert torch.allclose(emb[0, 0], tok[3] + pos[0])  # most recent token first
    assert torch.allclose(emb[0, 2], tok[1] + pos[2])
    assert torch.allclose(emb[0, 3:], tok[49] + pos[3:])  # padding


def test_pacing_keeps_the_most_recent_tokens_when_too_long():
    cfg = PacingConfig(vocab_size=50, n_positions=16, patch=8, depths=[1, 1, 1, 1], dims=[8, 8, 8, 8])
    model = Pacing(cfg)
    ids = torch.randint(0, 50, (1, 20))
    assert torch.equal(model.embed(ids), model.embed(ids[:, -16:]))


def test_wrong_embedding_width_is_an_error():
    layer = TokensToImage(n_positions=4, channels=3, patch=2)
    with pytest.raises(ValueError, match="embedding width"):
        layer(torch.zeros(1, 4, 10))


def test_channels_last_output_has_the_same_values():
    layer = TokensToImage(n_positions=9, channels=3, patch=4)
    emb = torch.randn(2, 9, 48)
    a, b = layer(emb), layer(emb, channels_last=True)
    assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)


def test_pacing_channels_last_computes_the_same_function():
    torch.manual_seed(0)
    cfg = PacingConfig(vocab_size=50, n_positions=16, patch=8, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16])
    model = Pacing(cfg).eval()
    ids = torch.randint(0, 50, (2, 16))
    ref = model(ids)
    model.to(memory_format=torch.channels_last)
    assert torch.allclose(model(ids), ref, atol=1e-5)
