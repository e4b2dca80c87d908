"""Speech Commands: read the dataset's own folder layout, or synthesize one with espeak-ng.

Layout (Warden 2018; v0.02 has 35 words):
    ROOT/<word>/<speaker>_nohash_<k>.wav     16 kHz mono clips of about one second
    ROOT/validation_list.txt                  held-out files, one 'word/file.wav' per line
    ROOT/testing_list.txt                     held-out files, one 'word/file.wav' per line
    ROOT/_background_noise_/                  ignored
Training files are every clip in neither list. Folders whose name starts with '_' are not words.

Clips are read with soundfile, averaged to mono, resampled with a polyphase anti-aliasing filter
(scipy.signal.resample_poly) and zero-padded or cut to a fixed length.

`synthesize()` (patchbench data speech-synth) speaks the words with espeak-ng in many voices,
variants, speeds and pitches into the same layout. A "speaker" is one voice+variant; speakers, not
clips, are split between training, validation and testing (as in the real dataset), so held-out clips
come from voices the model never heard.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchbench.errors import ConfigError

WORDS_V2 = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
            "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
            "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")
SPLIT_FILES = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
SOURCE_RATE = 16000


@dataclass
class SpeechFolder:
    root: Path
    words: list[str]  # label i is words[i]
    files: dict[str, list[tuple[Path, int]]]  # split (training | validation | testing) -> (path, label)


def read_folder(path: str, words: list[str] | None = None) -> SpeechFolder:
    """The clips of a Speech Commands folder, split by its two lists; ConfigError if it is not one."""
    if not path:
        raise ConfigError("data.path: speech_commands needs a Speech Commands folder (WORD/*.wav with validation_list.txt and "
                          "testing_list.txt); point data.path=DIR at it, or make a synthetic one with `patchbench data speech-synth DIR`")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.path: {str(root)!r} is not a folder; give the Speech Commands folder (WORD/*.wav with "
                          "validation_list.txt and testing_list.txt)")
    missing = [name for name in SPLIT_FILES.values() if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"data.path: {root} has no {' or '.join(missing)}; a Speech Commands folder lists its held-out "
                          "clips there (`patchbench data speech-synth` writes them)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if words:
        absent = [w for w in words if w not in found]
        if absent:
            raise ConfigError(f"data.words: {absent[0]!r} has no folder in {root}; words there: {', '.join(found)}")
        found = list(words)
    if len(found) < 2:
        raise ConfigError(f"data.path: {root} has {len(found)} word folder(s); a Speech Commands folder has one folder of "
                          ".wav clips per word")
    label = {w: i for i, w in enumerate(found)}
    held: dict[str, set[str]] = {}
    for split, name in SPLIT_FILES.items():
        entries = [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
        for rel in entries:
            if not (root / rel).is_file():
                raise ConfigError(f"data.path: {root / name} lists {rel!r}, which is not in {root}")
        held[split] = set(entries)
    files: dict[str, list[tuple[Path, int]]] = {"training": [], "validation": [], "testing": []}
    for w in found:
        for p in sorted((root / w).glob("*.wav")):
            rel = f"{w}/{p.name}"
            split = "validation" if rel in held["validation"] else "testing" if rel in held["testing"] else "training"
            files[split].append((p, label[w]))
    for split, clips in files.items():
        if not clips:
            raise ConfigError(f"data.path: {root} has no {split} clips of the words {', '.join(found[:5])}...; check "
                              f"{SPLIT_FILES.get(split, 'the word folders')}")
    return SpeechFolder(root, found, files)


def load_clip(path: Path, rate: int, samples: int) -> np.ndarray:
    """Mono float32 (samples,) at `rate` Hz: resampled, then zero-padded or cut at the end."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.LibsndfileError) as e:
        raise ConfigError(f"data.path: {path} cannot be read as audio ({str(e).splitlines()[0][:80]})") from None
    x = audio.mean(axis=1)  # (T,)
    if file_rate != rate:
        g = math.gcd(int(file_rate), int(rate))
        x = resample_poly(x, rate // g, int(file_rate) // g).astype(np.float32)
    out = np.zeros(samples, dtype=np.float32)
    out[: min(samples, len(x))] = x[:samples]
    return out


# --------------------------------------------------------------------------------------------------
# synthesis with espeak-ng

DEFAULT_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
DEFAULT_VARIANTS = ("m1", "m3", "m5", "f1", "f3", "f5")
DEFAULT_SPEEDS = (140, 180)  # words per minute
DEFAULT_PITCHES = (35, 65)  # 0..99


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("speech-synth: espeak-ng is not installed; install it (apt-get install espeak-ng)")
    return exe


def _espeak_names(exe: str, kind: str) -> set[str]:
    """Voice names (--voices) or variant names (--voices=variant) espeak-ng knows."""
    out = subprocess.run([exe, "--voices" if kind == "voice" else "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1] if kind == "voice" else cols[4].split("/")[-1])
    return names


def speaker_id(voice: str, variant: str) -> str:
    return hashlib.sha1(f"{voice}+{variant}".encode()).hexdigest()[:8]


def synthesize(out: str | Path, words: list[str] | None = None, voices: list[str] | None = None,
               variants: list[str] | None = None, speeds: list[int] | None = None, pitches: list[int] | None = None,
               val_percent: float = 10.0, test_percent: float = 10.0, jobs: int = 0) -> dict:
    """Write a Speech-Commands-layout folder at `out`; returns counts. Re-running overwrites it."""
    exe = _espeak()
    words = list(words or WORDS_V2)
    voices, variants = list(voices or DEFAULT_VOICES), list(variants or DEFAULT_VARIANTS)
    speeds, pitches = list(speeds or DEFAULT_SPEEDS), list(pitches or DEFAULT_PITCHES)
    known_voices, known_variants = _espeak_names(exe, "voice"), _espeak_names(exe, "variant")
    for v in voices:
        if v not in known_voices:
            raise ConfigError(f"--voices: espeak-ng has no voice {v!r}; English ones: "
                              f"{', '.join(sorted(n for n in known_voices if n.startswith('en')))}")
    for v in variants:
        if v not in known_variants:
            raise ConfigError(f"--variants: espeak-ng has no variant {v!r}; e.g. {', '.join(sorted(known_variants)[:12])}")
    for s in speeds:
        if not 80 <= s <= 450:
            raise ConfigError(f"--speeds: {s} words per minute; espeak-ng takes 80 to 450")
    for p in pitches:
        if not 0 <= p <= 99:
            raise ConfigError(f"--pitches: {p}; espeak-ng takes 0 to 99")
    bad = [w for w in words if not w.isalpha()]
    if bad:
        raise ConfigError(f"--words: {bad[0]!r} is not a plain word (letters only)")
    speakers = [(v, var) for v in voices for var in variants]
    if len(speakers) < 3:
        raise ConfigError(f"--voices/--variants: {len(speakers)} speaker(s); the training, validation and testing splits "
                          "need at least 3 (voice × variant)")
    if val_percent <= 0 or test_percent <= 0 or val_percent + test_percent >= 100:
        raise ConfigError(f"--val-percent/--test-percent: {val_percent} and {test_percent}; each above 0 and together below 100")

    # held-out speakers: the first by hash (a fixed, voice-independent order), at least one per list
    ranked = sorted(speakers, key=lambda s: speaker_id(*s))
    n_test = max(1, round(len(ranked) * test_percent / 100))
    n_val = max(1, round(len(ranked) * val_percent / 100))
    split_of = {s: "testing" if i < n_test else "validation" if i < n_test + n_val else "training" for i, s in enumerate(ranked)}

    root = Path(out).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    jobs_list = [(w, v, var, k, s, p) for w in words for (v, var) in speakers
                 for k, (s, p) in enumerate((s, p) for s in speeds for p in pitches)]
    for w in words:
        (root / w).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        def one(job) -> tuple[str, str]:
            w, v, var, k, s, p = job
            rel = f"{w}/{speaker_id(v, var)}_nohash_{k}.wav"
            _speak(exe, w, f"{v}+{var}", s, p, Path(tmp), root / rel)
            return rel, split_of[(v, var)]

        with ThreadPoolExecutor(max_workers=jobs or None) as pool:
            done = list(pool.map(one, jobs_list))
    for split, name in SPLIT_FILES.items():
        (root / name).write_text("".join(f"{rel}\n" for rel, sp in done if sp == split))
    counts = {sp: sum(1 for _, s in done if s == sp) for sp in ("training", "validation", "testing")}
    return {"root": str(root), "words": len(words), "speakers": len(speakers), "clips": len(done), **counts}


def _speak(exe: str, word: str, voice: str, speed: int, pitch: int, tmp: Path, dest: Path) -> None:
    """One clip: espeak-ng (22,050 Hz) -> trim silence -> 16 kHz -> centred in one second -> 16-bit wav."""
    import soundfile as sf
    from scipy.signal import resample_poly

    raw = tmp / f"{dest.parent.name}-{dest.stem}.wav"
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), word], check=True, capture_output=True)
    x, rate = sf.read(str(raw), dtype="float32")
    raw.unlink()
    if x.ndim > 1:
        x = x.mean(axis=1)
    loud = np.flatnonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-9))
    if len(loud):
        x = x[loud[0]: loud[-1] + 1]
    g = math.gcd(int(rate), SOURCE_RATE)
    x = resample_poly(x, SOURCE_RATE // g, int(rate) // g).astype(np.float32)[:SOURCE_RATE]
    clip = np.zeros(SOURCE_RATE, dtype=np.float32)
    start = (SOURCE_RATE - len(x)) // 2
    clip[start: start + len(x)] = x
    sf.write(str(dest), clip, SOURCE_RATE, subtype="PCM_16")
