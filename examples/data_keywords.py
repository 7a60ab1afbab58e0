"""Keyword spotting on speech synthesized with espeak-ng: ten words, 1 s clips at 16 kHz.

Clip generation (every random choice from one seeded generator):

    word     uniform over WORDS (balanced: each word equally often)
    voice    an espeak-ng English accent (VOICES) and a voice variant (VARIANTS: male,
             female and klatt voices), speed 130–230 words/min (-s), pitch 20–80 (-p)
    speech   espeak-ng's 22.05 kHz output, resampled to 16 kHz (polyphase), leading and
             trailing silence trimmed, scaled to a peak of 10^(g/20), g ~ U[−20, 0] dB
    clip     the word at a uniform random offset in a 1 s clip (16000 samples; a word longer
             than 1 s is cut), plus noise at SNR ~ U[0, 30] dB against the word's power:
             white, or brown (integrated white), or a mix of both

Model input (what a streaming edge model would consume, one step per 10 ms):

    decimate 16 kHz → 8 kHz (anti-aliased, polyphase), then cut into FRAME = 80-sample
    frames without overlap: x (100, 80), one feature vector per 10 ms frame

Raw samples rather than spectral features: the first layer (a Linear on each frame) learns its
own filter bank, there is no FFT in the deployed graph, and a step needs only the newest 10 ms.
8 kHz keeps the telephone speech band and halves the stored eval set (float16, ≤ 5 MB).

Training draws fresh offsets, gains and noise every epoch over a pool of synthesized words
(:class:`KeywordStream`); the eval set uses other synthesis settings and noise (another seed).

    python examples/data_keywords.py --out examples/data/keywords_eval.npz
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from sequence_set import SequenceSet, write_eval_set

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt2",
    "klatt3",
)
SAMPLE_RATE = 16_000
MODEL_RATE = 8_000
FRAME = 80  # samples per step at MODEL_RATE: 10 ms
ESPEAK_RATE = 22_050
SPEED = (130, 230)
PITCH = (20, 80)
GAIN_DB = (-20.0, 0.0)
SNR_DB = (0.0, 30.0)
SILENCE = 0.02  # trim threshold, relative to the peak

EVAL_COUNT = 300
EVAL_SEED = 1_000_003
POOL_PER_WORD = 300


@dataclass(frozen=True)
class Utterance:
    """The espeak-ng settings of one spoken word."""

    word: str
    voice: str
    variant: str
    speed: int
    pitch: int

    @property
    def label(self) -> int:
        return WORDS.index(self.word)


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    return path


def draw_utterances(count: int, rng: np.random.Generator) -> list[Utterance]:
    """``count`` settings, words balanced (count // 10 each, the rest spread), order shuffled."""
    words = np.resize(np.arange(len(WORDS)), count)
    rng.shuffle(words)
    return [
        Utterance(
            word=WORDS[w],
            voice=VOICES[rng.integers(len(VOICES))],
            variant=VARIANTS[rng.integers(len(VARIANTS))],
            speed=int(rng.integers(SPEED[0], SPEED[1] + 1)),
            pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        )
        for w in words
    ]


def synthesize(utterance: Utterance) -> np.ndarray:
    """The spoken word at 16 kHz, silence trimmed, peak 1: float32 (n,)."""
    from scipy.signal import resample_poly

    u = utterance
    voice = ("-v", f"{u.voice}+{u.variant}", "-s", str(u.speed), "-p", str(u.pitch))
    wav = subprocess.run(
        [espeak_binary(), *voice, "--stdout", u.word], capture_output=True, check=True
    ).stdout
    start = wav.find(b"data") + 8  # espeak-ng writes a 16-bit mono PCM WAV
    pcm = np.frombuffer(wav[start : start + (len(wav) - start) // 2 * 2], dtype="<i2")
    speech = resample_poly(pcm.astype(np.float64), SAMPLE_RATE // 50, ESPEAK_RATE // 50)
    loud = np.flatnonzero(np.abs(speech) > SILENCE * np.abs(speech).max())
    speech = speech[loud[0] : loud[-1] + 1]
    return (speech / np.abs(speech).max()).astype(np.float32)


def place_in_clip(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 1 s clip (16000,) float32: the word at a random offset and gain, plus noise."""
    speech = speech[:SAMPLE_RATE] * 10 ** (rng.uniform(*GAIN_DB) / 20)
    offset = int(rng.integers(SAMPLE_RATE - len(speech) + 1))
    clip = np.zeros(SAMPLE_RATE)
    clip[offset : offset + len(speech)] = speech
    white = rng.standard_normal(SAMPLE_RATE)
    brown = np.cumsum(rng.standard_normal(SAMPLE_RATE))
    brown -= np.linspace(brown[0], brown[-1], SAMPLE_RATE)  # no drift: ends meet at 0
    mix = rng.uniform()
    noise = mix * white / white.std() + (1 - mix) * brown / brown.std()
    snr = 10 ** (rng.uniform(*SNR_DB) / 10)
    noise *= np.sqrt(np.mean(speech**2) / snr / np.mean(noise**2))
    return np.clip(clip + noise, -1.0, 1.0).astype(np.float32)


def to_frames(clips: np.ndarray) -> np.ndarray:
    """Clips (N, 16000) at 16 kHz → model input (N, 100, 80) float32: 8 kHz, 10 ms frames."""
    from scipy.signal import resample_poly

    low = resample_poly(clips, MODEL_RATE, SAMPLE_RATE, axis=-1)  # (N, 8000)
    return low.reshape(len(clips), -1, FRAME).astype(np.float32)


def keyword_clips(count: int, seed: int) -> SequenceSet:
    """``count`` clips with fresh synthesis settings: x (count, 100, 80) float32, y (count,)."""
    rng = np.random.default_rng(seed)
    utterances = draw_utterances(count, rng)
    clips = np.stack([place_in_clip(synthesize(u), rng) for u in utterances])
    return SequenceSet(to_frames(clips), np.array([u.label for u in utterances]))


class KeywordStream:
    """Training data on the fly: a pool of synthesized words, placed anew every epoch."""

    def __init__(self, seed: int, per_word: int = POOL_PER_WORD) -> None:
        rng = np.random.default_rng(seed)
        utterances = draw_utterances(per_word * len(WORDS), rng)
        self.speech = [synthesize(u) for u in utterances]
        self.labels = np.array([u.label for u in utterances])
        self.seed = seed

    def epoch(self, index: int) -> SequenceSet:
        """The pool as clips with this epoch's offsets, gains and noise (deterministic per index)."""
        rng = np.random.default_rng([self.seed, index])
        clips = np.stack([place_in_clip(s, rng) for s in self.speech])
        return SequenceSet(to_frames(clips), self.labels)


def eval_set(count: int = EVAL_COUNT, seed: int = EVAL_SEED) -> SequenceSet:
    """The held-out clips, stored as float16 (cast to float32 before use)."""
    data = keyword_clips(count, seed)
    return SequenceSet(data.x.astype(np.float16), data.y)


if __name__ == "__main__":
    write_eval_set(eval_set, "keywords", EVAL_COUNT, EVAL_SEED)
