"""int4 products of one row as a Gluon kernel over tinygemm's packed words (backends/pytorch/int4_one_row.py). Triton's
interpreter does not run Gluon: here the layouts the kernel reads (which input each nibble holds, the scales'
order, the boxes of its buffers) are held to tinygemm's packing and to the dequantised product, through the same
arithmetic in torch; tests/test_one_row_kernels.py compiles the kernel for Hopper; tests/test_gpu.py runs it."""

import torch

from higgs_bench.backends.pytorch.int4_one_row import (GROUPS, ROW_BYTES, ROWS, first_block, input_order,
                                                      pack_scales, runs_on, unit_rows, written_for)
from higgs_bench.backends.pytorch.int4_rows import GROUP, tinygemm_pack
from tests.test_int4_rows import int4_weight


def test_each_byte_of_tinygemms_packing_holds_the_inputs_input_order_names():
    values = torch.randint(0, 16, (16, 256))
    rows_of_bytes = tinygemm_pack(values).view(torch.uint8).reshape(-1, ROW_BYTES)  # (block, group, row)
    order = torch.tensor(input_order())
    assert sorted(order.tolist() + (order + 8).tolist()) == list(range(GROUP))
    for row in range(16):
        for group in range(2):
            packed = rows_of_bytes[((row // 8) * 2 + group) * 8 + row % 8].long()
            assert torch.equal(packed & 15, values[row, GROUP * group + order])
            assert torch.equal(packed >> 4, values[row, GROUP * group + order + 8])


def kernels_product(x: torch.Tensor, qdata: torch.Tensor, packed_scales: torch.Tensor, outputs: int,
                    order: list[int], pair: int = 1) -> torch.Tensor:
    """What int4_one_row_kernel computes, indexed as its loader and reducer index: a unit's buffer b is the boxes of
    64 rows of 64 bytes at row ((first + block * pair) * groups + 8 b) * 8, block 0 and 1 (A's rows: block, group,
    row; first = first_block(unit, pair)); the input row in float16 in the nibbles' order; scales and zero points
    from pack_scales' block of the buffer; the unit's products go to rows 8 (first + block * pair) + r."""
    rows_of_bytes = qdata.view(torch.uint8).reshape(-1, ROW_BYTES)
    groups = qdata.shape[1]
    x = torch.nn.functional.pad(x.float(), (0, groups * GROUP - x.numel())).half().float()
    group_of_row = torch.arange(2 * 64) // 8 % 8
    units = -(-outputs // ROWS)
    y = torch.zeros(units * ROWS)
    for unit in range(units):
        total = torch.zeros(2 * 64)
        first = first_block(unit, pair)
        for b in range(groups // GROUPS):
            a = torch.cat([rows_of_bytes[((first + block * pair) * groups + 8 * b) * 8:][:64]
                           for block in (0, 1)]).long()
            inputs = GROUP * (8 * b + group_of_row)[:, None] + torch.tensor(order)[None, :]
            x_low, x_high = x[inputs], x[inputs + 8]
            products = ((a & 15) - 8) * x_low + ((a >> 4) - 8) * x_high
            scale, zero = packed_scales[(unit * (groups // GROUPS) + b) * 2:][:2].float()
            total += products.sum(1) * scale + zero * (x_low.sum(1) + x_high.sum(1))
        for block in (0, 1):
            y[8 * (first + block * pair):][:8] = total.view(2, 8, 8).sum(1)[block]
    return y[:outputs]


def test_the_kernels_reading_of_tinygemms_words_and_packed_scales_is_the_dequantised_product():
    """256 inputs packed as torchao pads them (to 1024: one buffer), 48 outputs (three units); a wrong order of the
    nibbles' inputs or scales packed for other rows fail."""
    torch.manual_seed(0)
    packed, scale_and_zero, weights = int4_weight(48, 256, packed_inputs=1024)
    x = torch.randn(256).to(torch.bfloat16)
    want = weights @ x.float()
    mine = kernels_product(x, packed, pack_scales(scale_and_zero), 48, input_order())
    assert ((mine - want).norm() / want.norm()).item() < 1e-5
    plain = kernels_product(x, packed, pack_scales(scale_and_zero), 48, list(range(ROW_BYTES)))
    assert ((plain - want).norm() / want.norm()).item() > 0.3
    shuffled = pack_scales(scale_and_zero.flip(1))
    wrong = kernels_product(x, packed, shuffled, 48, input_order())
    assert ((wrong - want).norm() / want.norm()).item() > 0.3


def test_only_the_triton_the_kernel_was_written_against_or_later_runs_it_and_only_on_cuda():
    assert written_for("3.6.0") and written_for("3.10.1") and written_for("4.0.0+git1234")
    assert not written_for("3.5.1") and not written_for("3.4.0")  # torch 2.9's Triton: tinygemm's products
    assert not runs_on(torch.device("cpu"))


def test_units_that_pair_blocks_of_rows_apart_compute_the_same_product():
    """The fused epilogues' pairing (RoPE's rows d and d + half a head: 8 blocks apart at the 3B shape; gate's and up's)
    takes each row once and gives each its own scales: 128 outputs in units of blocks 2 and 8 blocks apart; scales
    packed for other units fail."""
    torch.manual_seed(0)
    packed, scale_and_zero, weights = int4_weight(128, 256, packed_inputs=1024)
    x = torch.randn(256).to(torch.bfloat16)
    want = weights @ x.float()
    for pair in (2, 8):
        assert sorted(unit_rows(128, pair).tolist()) == list(range(128))
        assert first_block(1, pair) == 1 and first_block(pair, pair) == 2 * pair
        mine = kernels_product(x, packed, pack_scales(scale_and_zero, pair), 128, input_order(), pair)
        assert ((mine - want).norm() / want.norm()).item() < 1e-5
        unpaired = kernels_product(x, packed, pack_scales(scale_and_zero), 128, input_order(), pair)
        assert ((unpaired - want).norm() / want.norm()).item() > 0.1
