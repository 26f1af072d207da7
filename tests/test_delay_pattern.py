"""The delay pattern, its revert and trimming, on hand-made codes and streams."""

import torch

from higgs_bench.generate.delay import apply_delay, codes_from_stream, revert_delay

BOS, EOS, N = 1024, 1025, 8


def test_apply_delay_shifts_codebook_k_by_k_with_bos_and_eos():
    codes = torch.arange(N * 3).view(N, 3)
    stream = apply_delay(codes, BOS, EOS)
    assert stream.shape == (3 + N + 1, N)
    for k in range(N):
        column = stream[:, k].tolist()
        assert column == [BOS] * (k + 1) + codes[k].tolist() + [EOS] * (N - k)


def test_revert_undoes_the_shift():
    codes = torch.randint(0, 1024, (N, 5))
    stream = apply_delay(codes, BOS, EOS)
    reverted = revert_delay(stream)
    assert reverted.shape == (N, 5 + 2)
    assert torch.equal(reverted[:, 1:-1], codes)
    assert (reverted[:, 0] == BOS).all() and (reverted[:, -1] == EOS).all()


def test_revert_of_a_stream_shorter_than_the_pattern_is_empty():
    assert revert_delay(torch.zeros(5, N, dtype=torch.long)).shape == (N, 0)


def generated(codes):
    """What a model following the pattern generates: the delayed stream plus one all-EOS frame."""
    stream = apply_delay(codes, BOS, EOS)
    return torch.cat([stream, torch.full((1, N), EOS)])


def test_codes_from_a_finished_stream_are_the_codes():
    codes = torch.randint(0, 1024, (N, 6))
    assert torch.equal(codes_from_stream(generated(codes), BOS, EOS), codes)


def test_frames_after_the_all_eos_frame_are_ignored():
    codes = torch.randint(0, 1024, (N, 4))
    padded = torch.cat([generated(codes), torch.full((3, N), EOS)])
    assert torch.equal(codes_from_stream(padded, BOS, EOS), codes)


def test_stream_cut_by_the_frame_limit_keeps_every_complete_frame():
    codes = torch.randint(0, 1024, (N, 10))
    stream = apply_delay(codes, BOS, EOS)[:12]  # no EOS yet
    assert torch.equal(codes_from_stream(stream, BOS, EOS), codes[:, : 12 - N])


def test_audio_ends_at_the_first_eos_in_any_codebook():
    codes = torch.randint(0, 1024, (N, 6))
    stream = apply_delay(codes, BOS, EOS)
    stream[3 + 2, 2] = EOS  # codebook 2 ends early, at its 3rd code
    assert torch.equal(codes_from_stream(stream, BOS, EOS), codes[:, :2])


def test_stray_bos_inside_the_data_is_clipped_to_the_last_code():
    codes = torch.randint(0, 1024, (N, 3))
    stream = generated(codes)
    stream[1, 0] = BOS  # codebook 0's first data frame
    out = codes_from_stream(stream, BOS, EOS)
    assert out[0, 0] == 1023 and torch.equal(out[1:], codes[1:])
