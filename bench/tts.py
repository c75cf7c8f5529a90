"""Benchmark: bulletin -> stored MP3 with prepare_speech, against the floor of its two unavoidable steps.

Run: ``.venv/bin/python bench/tts.py``. Builds a ~1,000-word Vietnamese bulletin from the seed text
(read at run time; a built-in paragraph if it is missing) and measures

* cold:  ``prepare_speech`` end to end into a fresh temporary store,
* floor: raw espeak synthesis of the same normalised text in one call + one MP3 encode of that audio,
* hit:   the same ``prepare_speech`` call again, answered from the cache (median of several repeats).

Floor and cold runs are interleaved over a few rounds and the medians compared.

Targets: cold / floor <= 1.3, hit < 20 ms. Appends a record to ``bench/results.json``
(``--no-record`` to skip).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from radio.settings import load_settings  # noqa: E402
from radio.sound.ffmpeg import AudioSegment, mp3_duration  # noqa: E402
from radio.sound.pipeline import encode_mp3  # noqa: E402
from radio.sound.store import AudioStore  # noqa: E402
from radio.speech.chunking import split_bulletin  # noqa: E402
from radio.speech.engines import EspeakEngine  # noqa: E402
from radio.speech.lexicon import default_lexicon  # noqa: E402
from radio.speech.normalize import normalize  # noqa: E402
from radio.speech.prepare import prepare_speech  # noqa: E402

SEED = Path("/work/shared/seed/000_c9a23b6f641d9d91.txt")
RESULTS = ROOT / "bench" / "results.json"
TARGET_WORDS = 1000
TARGET_RATIO = 1.3
TARGET_HIT_MS = 20.0
HIT_REPEATS = 21
ROUNDS = 3
FALLBACK_PARAGRAPH = (
    "UBND phường Thọ Xương thông báo: từ ngày 30/9/2024, các hộ gia đình trên địa bàn phường thực hiện "
    "phân loại rác thải sinh hoạt tại nguồn. Rác hữu cơ để riêng, rác tái chế để riêng. Xe thu gom đi "
    "qua các tổ dân phố vào lúc 17 giờ hằng ngày; đề nghị bà con để rác đúng giờ, đúng nơi quy định. "
    "Mọi thắc mắc xin liên hệ văn phòng UBND phường, điện thoại 0204.3854.123."
)


def build_bulletin(words: int = TARGET_WORDS) -> str:
    """Whole sentences of the seed text, paragraphs kept, until ``words`` words (repeating if short)."""
    source = SEED.read_text(encoding="utf-8") if SEED.exists() else FALLBACK_PARAGRAPH
    paragraphs = split_bulletin(source)
    out: list[str] = []
    count = 0
    while count < words:
        for paragraph in paragraphs:
            kept: list[str] = []
            for sentence in paragraph:
                kept.append(sentence)
                count += len(sentence.split())
                if count >= words:
                    break
            out.append(" ".join(kept))
            if count >= words:
                break
    return "\n\n".join(out)


def floor_seconds(text: str, voice: str, rate: int, bitrate: str, sample_rate: int) -> tuple[float, float]:
    """Time of raw espeak on the whole normalised text (one call) plus one MP3 encode; and its length."""
    lexicon = default_lexicon()
    spoken = "\n".join(normalize(s, lexicon) for p in split_bulletin(text) for s in p)
    engine = EspeakEngine()
    engine.synthesize("Khởi động.", voice=voice, rate=rate)  # library load is not part of either side
    start = time.perf_counter()
    audio: AudioSegment = engine.synthesize(spoken, voice=voice, rate=rate)
    mp3 = encode_mp3(audio.set_frame_rate(sample_rate), bitrate)
    elapsed = time.perf_counter() - start
    return elapsed, mp3_duration(mp3) or 0.0


def main() -> int:
    settings = load_settings()
    text = build_bulletin()
    words = len(text.split())
    floors: list[float] = []
    colds: list[float] = []
    hits: list[float] = []
    # Interleaved rounds and medians: on a shared 2-core machine single timings swing by +-30 %.
    for _ in range(ROUNDS):
        floor, floor_audio = floor_seconds(text, settings.tts_voice, settings.tts_rate, settings.mp3_bitrate,
                                           settings.sample_rate)
        floors.append(floor)
        with tempfile.TemporaryDirectory(prefix="radio-bench-") as tmp:
            store = AudioStore(Path(tmp))
            start = time.perf_counter()
            cold = prepare_speech([text], settings, engine="espeak", store=store)
            colds.append(time.perf_counter() - start)
            assert not cold.cached
            for _ in range(HIT_REPEATS):
                start = time.perf_counter()
                again = prepare_speech([text], settings, engine="espeak", store=store)
                hits.append(time.perf_counter() - start)
                assert again.cached and again.sha256 == cold.sha256
    floor, cold_s = statistics.median(floors), statistics.median(colds)
    ratio = cold_s / floor
    hit_ms = statistics.median(hits) * 1000

    rows = [
        ("bulletin", f"{words} words, {len(text)} chars", ""),
        ("audio (prepared / floor)", f"{cold.duration_s:.1f} s / {floor_audio:.1f} s", ""),
        (f"floor: espeak + 1 MP3 encode (median of {ROUNDS})", f"{floor:.3f} s",
         " ".join(f"{x:.2f}" for x in floors)),
        (f"prepare_speech cold (median of {ROUNDS})", f"{cold_s:.3f} s", " ".join(f"{x:.2f}" for x in colds)),
        ("ratio cold / floor", f"{ratio:.2f}",
         f"target <= {TARGET_RATIO}: {'ok' if ratio <= TARGET_RATIO else 'MISS'}"),
        (f"cache hit (median of {len(hits)})", f"{hit_ms:.2f} ms",
         f"target < {TARGET_HIT_MS:.0f} ms: {'ok' if hit_ms < TARGET_HIT_MS else 'MISS'}"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:<24} {note}")

    record = {
        "bench": "tts",
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "words": words,
        "audio_s": round(cold.duration_s, 3),
        "rounds": ROUNDS,
        "floor_s": round(floor, 4),
        "cold_s": round(cold_s, 4),
        "floor_runs_s": [round(x, 4) for x in floors],
        "cold_runs_s": [round(x, 4) for x in colds],
        "ratio": round(ratio, 3),
        "cache_hit_median_ms": round(hit_ms, 3),
        "targets": {"ratio": TARGET_RATIO, "cache_hit_ms": TARGET_HIT_MS},
    }
    if "--no-record" in sys.argv[1:]:
        return 0
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    results.append(record)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
