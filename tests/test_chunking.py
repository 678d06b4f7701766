"""The chunk plan on its own: receptive field, schedule and crops are pure functions of the architecture."""

from __future__ import annotations

import copy

import pytest

from runtime import chunking
from runtime.chunking import ChunkingError, Schedule

# Piper's medium voices (the built-in real voice): the numbers of its config.
PIPER_MEDIUM = {
    "flow": {"couplings": 4, "layers": 4, "kernel_size": 5, "dilation_rate": 1},
    "decoder": {"conv_pre_kernel": 7, "upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
                "resblock_type": "2", "resblock_kernel_sizes": [3, 5, 7],
                "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]], "conv_post_kernel": 7},
}


def test_receptive_field_of_piper_medium_by_hand():
    """Flow: 4 couplings x 4 convolutions of kernel 5 = 4 * 4 * 2 = 32 frames each side. Decoder, from the
    last sample of a chunk ending at frame b: conv_post +3 samples, stage 2's widest resblock (kernel 7,
    dilations 3 and 12) +3*15 = 45 samples -> b*256+47; ups.2 (kernel 8, stride 4, pad 2) -> floor(49/4) =
    b*64+12; stage 1 +45 -> b*64+57; ups.1 (16, 8, 4) -> floor(61/8) = b*8+7; stage 0 +45 -> b*8+52;
    ups.0 -> floor(56/8) = b+7; conv_pre +3 -> b+10: 11 frames beyond the last frame b-1."""
    assert chunking.context(chunking.layers(PIPER_MEDIUM)) == 43
    no_flow = copy.deepcopy(PIPER_MEDIUM)
    no_flow["flow"]["couplings"] = 0
    assert chunking.context(chunking.layers(no_flow)) == 11
    assert chunking.hop_length(chunking.layers(PIPER_MEDIUM)) == 256
    assert chunking.crop_names(chunking.layers(PIPER_MEDIUM)) == ["flow.0", "flow.1", "flow.2", "flow.3",
                                                                  "ups.0", "ups.1", "ups.2"]


def test_resblock_type_1_counts_both_convolutions():
    arch = copy.deepcopy(PIPER_MEDIUM)
    arch["flow"]["couplings"] = 0
    arch["decoder"].update(resblock_type="1", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
    # each dilation d: a conv with d and one with 1: (1+1)+(3+1)+(5+1) = 12 samples per stage
    stages = [layer for layer in chunking.layers(arch) if isinstance(layer, chunking.Conv)]
    assert [s.half for s in stages] == [3, 12, 12, 12, 3]


@pytest.mark.parametrize("frames", [1, 2, 7, 8, 9, 23, 24, 937, 5000])
def test_schedule_covers_the_sentence_in_growing_chunks(frames):
    schedule = Schedule(first_frames=8, growth=2.0, max_frames=256)
    chunks = schedule.chunks(frames)
    assert chunks[0][0] == 0 and chunks[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    sizes = [b - a for a, b in chunks]
    assert sizes[0] == min(frames, 8) or (len(sizes) == 1 and sizes[0] == frames)
    assert all(s <= 256 + 8 for s in sizes)
    assert all(x <= y for x, y in zip(sizes[:-2], sizes[1:-1]))  # growing (the last is what is left)


@pytest.mark.parametrize("kwargs", [{"first_frames": 0}, {"first_frames": 16, "max_frames": 8},
                                    {"growth": 0.5}, {"first_frames": 2.5}, {"max_frames": 10**9}])
def test_bad_schedule_is_a_clear_error(kwargs):
    with pytest.raises(ChunkingError, match="chunk"):
        Schedule(**kwargs)


@pytest.mark.parametrize("start,end", [(0, 8), (8, 24), (100, 356), (900, 937), (0, 937)])
def test_plan_stays_inside_the_sentence_and_trims_to_the_chunk(start, end):
    chain = chunking.layers(PIPER_MEDIUM)
    plan = chunking.plan_chunk(chain, 937, start, end)
    w0, w1 = plan.window
    assert 0 <= w0 <= start and end <= w1 <= 937
    assert w0 == max(0, start - 43) and w1 == min(937, end + 43)
    assert plan.trim[1] - plan.trim[0] == (end - start) * 256
    assert all(0 <= s < e for s, e in zip(plan.crop_starts, plan.crop_ends))
    # the audio-rate stages carry almost no context: ups.2's input is cropped to the chunk +/- a frame
    rate = 64
    assert plan.crop_ends[-1] - plan.crop_starts[-1] <= (end - start) * rate + 2 * rate


def test_chunk_outside_the_sentence_is_refused():
    with pytest.raises(ChunkingError, match="not inside"):
        chunking.plan_chunk(chunking.layers(PIPER_MEDIUM), 10, 5, 11)


@pytest.mark.parametrize("edit,match", [
    (lambda a: a["decoder"].update(resblock_kernel_sizes=[4, 5, 7]), "even kernel"),
    (lambda a: a["decoder"].update(upsample_rates=[8, 8]), "differ in length"),
    (lambda a: a["decoder"].update(upsample_kernel_sizes=[16, 16, 9]), "exactly stride"),
    (lambda a: a["decoder"].update(resblock_type="3"), "resblock_type"),
    (lambda a: a["flow"].pop("layers"), "missing or has a bad field"),
    (lambda a: a["decoder"].update(upsample_rates="8,8,4"), "list of positive integers"),
])
def test_bad_architecture_is_a_clear_error(edit, match):
    arch = copy.deepcopy(PIPER_MEDIUM)
    edit(arch)
    with pytest.raises(ChunkingError, match=match):
        chunking.layers(arch)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pacer_starts_small_then_sizes_chunks_by_the_audio_in_hand():
    """Frames of 10 ms, decoding at 1 ms a frame: the first chunk is small, then each is as large as half the
    audio in hand pays for, at most 8x the one before and the largest chunk."""
    clock = Clock()
    pacer = chunking.Pacer(Schedule(first_frames=8, growth=8.0, max_frames=512), frame_seconds=0.010, clock=clock)
    sizes = []
    for start, end, last in pacer.bounds(2000):
        size = end - start
        sizes.append(size)
        clock.now += size * 0.001  # decoding it
        pacer.record(size, size * 0.001)
    assert sizes[0] == 8 and sum(sizes) == 2000
    assert all(b <= 8 * a for a, b in zip(sizes, sizes[1:-1]))
    assert max(sizes) == 512 and len(sizes) <= 8
    # 8 frames in hand (80 ms) after the first; half of it decodes 40 frames at 1 ms each
    assert sizes[1] == 40


def test_pacer_lets_a_later_sentence_start_large_and_a_slow_device_take_small_steps():
    clock = Clock()
    pacer = chunking.Pacer(Schedule(first_frames=8, growth=8.0, max_frames=512), frame_seconds=0.010, clock=clock)
    for start, end, _ in pacer.bounds(600):  # the first sentence: 6 s of audio made in well under a second
        clock.now += (end - start) * 0.001
        pacer.record(end - start, (end - start) * 0.001)
    first_of_next = next(pacer.bounds(300))
    assert first_of_next[1] - first_of_next[0] == 300  # audio in hand: no need for a small first chunk
    slow = chunking.Pacer(Schedule(first_frames=8, growth=8.0, max_frames=512), frame_seconds=0.010, clock=clock)
    sizes = []
    for start, end, _ in slow.bounds(200):  # decoding at 8 ms a frame: barely faster than real time
        sizes.append(end - start)
        clock.now += (end - start) * 0.008
        slow.record(end - start, (end - start) * 0.008)
    assert sizes[:3] == [8, 8, 8]  # it stays small while the audio in hand is small
