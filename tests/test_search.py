"""Search: the index (incremental, resumable, failures recorded, models never mixed), queries by
text and example, and the CLI, on real files with the tiny random CLAP loaded like real weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift import Classifier, Library
from soundsift.cli.main import main
from soundsift.search.errors import IndexMismatchError, IndexNotFoundError, QueryError
from soundsift.search.query import merge_adjacent, parse_span
from soundsift.search.stores import Candidate, WindowRows
from tests.data.shared import ESC50, shared_path
from tests.data.tiny_clap import build_tiny_clap
from tests.server_process import without_read_override

RATE = 16_000
HOP_S = 2.5


def _noise_clip(seed: int, seconds: float = 5.0) -> np.ndarray:
    """Band-limited noise with a seed-dependent pitch envelope: clips the tiny model tells apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (150 + 90 * seed) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.2 * seed) * t))
    return (0.2 * tone + rng.normal(0, 0.02 + 0.01 * seed, len(t))).astype(np.float32)


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    """Six short clips, one 40 s recording made of eight different sounds, and a corrupt file."""
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    for seed in range(6):
        soundfile.write(folder / ("sub" if seed % 2 else ".") / f"clip{seed}.wav", _noise_clip(seed), RATE)
    long = np.concatenate([_noise_clip(10 + part) for part in range(8)])
    soundfile.write(folder / "long.flac", long, RATE)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    return folder


@pytest.fixture
def library(tmp_path: Path, classifier: Classifier) -> Library:
    return Library(tmp_path / "index", classifier=classifier)


def _clips(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.wav") if path.name != "broken.wav")


def test_every_clip_searched_by_itself_comes_first(library: Library, library_folder: Path) -> None:
    report = library.add([library_folder])
    assert report.added == 7 and report.windows_added == 6 + 15
    for clip in [*_clips(library_folder), library_folder / "long.flac"]:
        hits = library.search(like=str(clip), top=3).hits
        assert hits[0].path == str(clip.resolve()), clip
        assert hits[0].score > 0.999


def test_real_recordings_retrieve_themselves(tmp_path: Path, classifier: Classifier) -> None:
    audio = shared_path(ESC50) / "audio"
    clips = sorted(audio.glob("*.wav"))[:24]
    folder = tmp_path / "esc"
    folder.mkdir()
    for clip in clips:
        os.symlink(clip, folder / clip.name)
    library = Library(tmp_path / "index", classifier=classifier)
    assert library.add([folder]).added == len(clips)
    for clip in clips:
        assert library.search(like=str(folder / clip.name), top=1).hits[0].path == str(clip.resolve())


def test_an_excerpt_finds_its_recording_at_the_right_time(
    library: Library, library_folder: Path, tmp_path: Path
) -> None:
    """Excerpts start on window boundaries: the tiny random model cannot place an excerpt that straddles
    two windows (its embeddings of a 0.1 s shift already differ more than those of two sounds), so
    placing unaligned excerpts is left to real weights; the times, windows and lookup are tested here."""
    library.add([library_folder])
    samples, _ = soundfile.read(library_folder / "long.flac", dtype="float32")
    for start_s in (12.5, 27.5):
        excerpt = tmp_path / f"excerpt-{start_s}.wav"
        soundfile.write(excerpt, samples[int(start_s * RATE) : int((start_s + 5) * RATE)], RATE)
        best = library.search(like=str(excerpt), top=5).hits[0]
        assert best.path == str((library_folder / "long.flac").resolve())
        assert abs(best.best_start_s - start_s) <= HOP_S
        assert best.start_s <= start_s <= best.end_s
    # The same through FILE@START-END on the long file itself.
    hit = library.search(like=str(library_folder / "long.flac"), like_start_s=20, like_end_s=25, top=1).hits[0]
    assert hit.best_start_s == pytest.approx(20.0)


def test_reindexing_touches_only_what_changed(library: Library, library_folder: Path) -> None:
    first = library.add([library_folder])
    assert (first.added, len(first.failed)) == (7, 1)
    again = library.add([library_folder])
    assert (again.added, again.changed, again.unchanged, again.windows_added) == (0, 0, 8, 0)
    assert again.failed == []  # a failed file is not retried until it changes

    changed = library_folder / "clip0.wav"
    soundfile.write(changed, _noise_clip(40), RATE)
    touched = library_folder / "sub" / "clip1.wav"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    soundfile.write(library_folder / "new.wav", _noise_clip(41), RATE)
    third = library.add([library_folder])
    assert (third.added, third.changed, third.touched, third.unchanged) == (1, 1, 1, 6)
    assert third.windows_added == 2
    status = library.status()
    assert status.files_indexed == 8 and status.windows == 7 + 15
    result = library.search(like=str(changed), top=1)
    assert result.hits[0].path == str(changed.resolve())
    assert result.windows_searched == 7 + 15  # the changed file's old window is gone from the store


def test_deleted_files_disappear(library: Library, library_folder: Path) -> None:
    library.add([library_folder])
    gone = library_folder / "sub" / "clip3.wav"
    kept = library_folder / "clip2.wav"
    shutil.copy(gone, kept.parent / "copy-of-3.wav")
    gone.unlink()
    report = library.add([library_folder])
    assert report.removed == 1 and report.added == 1
    paths = {hit.path for hit in library.search(like=str(kept.parent / "copy-of-3.wav"), top=50).hits}
    assert str(gone.resolve()) not in paths
    assert library.status().files_indexed == 7
    # A bare run rescans the folders indexed before.
    kept.unlink()
    assert library.add().removed == 1


def test_a_corrupt_file_is_recorded_and_skipped(library: Library, library_folder: Path) -> None:
    report = library.add([library_folder])
    (problem,) = report.failed
    assert problem.path == str((library_folder / "broken.wav").resolve())
    assert problem.error == "audio_decode_error"
    status = library.status()
    assert status.files_failed == 1 and status.failures[0].path == problem.path
    assert all(hit.path != problem.path for hit in library.search(text="dog barking", top=50).hits)
    assert library.add([library_folder], retry_failed=True).failed[0].path == problem.path


def test_an_interrupted_run_resumes(library: Library, library_folder: Path) -> None:
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 2:
            stop.set()

    first = library.add([library_folder], progress=progress, stop=stop, workers=1)
    assert first.interrupted
    finished = first.added + len(first.failed)
    assert 2 <= finished < 8
    status = library.status()
    assert status.files_pending == 8 - finished
    second = library.add([library_folder])
    assert second.resumed + len(second.failed) == 8 - finished and not second.interrupted
    status = library.status()
    assert (status.files_pending, status.files_indexed, status.windows) == (0, 7, 21)


def test_another_model_is_refused(library: Library, library_folder: Path, tmp_path: Path) -> None:
    library.add([library_folder / "sub"])
    other_model = build_tiny_clap(tmp_path / "other-model", seed=7)
    other = Library(library.folder, model=str(other_model), device="cpu")
    with pytest.raises(IndexMismatchError, match="embeds differently"):
        other.add([library_folder])
    with pytest.raises(IndexMismatchError):
        other.search(text="rain")
    # The index's own model is found from the manifest when none is given.
    same = Library(library.folder, device="cpu")
    assert same.search(text="rain", top=1).hits


def test_text_queries_exclusions_and_filters(library: Library, library_folder: Path) -> None:
    library.add([library_folder])
    plain = library.search(text="door slamming", top=50)
    assert plain.exact and plain.windows_searched == 21 and plain.excluded == []
    assert [hit.score for hit in plain.hits] == sorted((hit.score for hit in plain.hits), reverse=True)
    # The query's own description as exclusion vetoes every window it would have matched less well.
    excluded = library.search(text="door slamming -glass breaking", top=50)
    assert excluded.excluded == ["glass breaking"]
    assert excluded.vetoed + sum(hit.windows for hit in excluded.hits) <= 21
    only_sub = library.search(text="door slamming", top=50, path_glob="*/sub/*")
    assert only_sub.hits and all("/sub/" in hit.path for hit in only_sub.hits)
    long_only = library.search(text="door slamming", top=50, min_duration_s=30)
    assert {hit.path for hit in long_only.hits} == {str((library_folder / "long.flac").resolve())}
    assert library.search(text="door slamming", top=5, modified_before=1.0).hits == []
    chinese = library.search(text="狗叫声", top=1)
    assert chinese.translated_as and chinese.translated_as[0]
    with pytest.raises(QueryError):
        library.search(text="  ")
    with pytest.raises(QueryError):
        library.search(text="rain", like="x.wav")


def test_an_empty_folder_is_no_index(tmp_path: Path, classifier: Classifier) -> None:
    with pytest.raises(IndexNotFoundError):
        Library(tmp_path / "nothing", classifier=classifier).search(text="rain")
    assert not Library(tmp_path / "nothing", classifier=classifier).status().exists


def test_adjacent_windows_merge_into_one_hit() -> None:
    def window(file_id: int, start: float, score: float) -> tuple[Candidate, float]:
        return Candidate(0, file_id, start, start + 5, score, np.zeros(2, np.float32)), score

    spans = merge_adjacent(
        [window(1, 10, 0.50), window(1, 12.5, 0.52), window(1, 15, 0.49), window(1, 40, 0.45), window(2, 0, 0.3)]
    )
    assert [(s.file_id, s.start_s, s.end_s, s.windows) for s in spans] == [(1, 10, 20, 3), (1, 40, 45, 1), (2, 0, 5, 1)]
    assert spans[0].best_start_s == 12.5 and spans[0].score == 0.52
    # A much weaker neighbour is the shoulder of the hit, not part of it and not a hit of its own.
    spans = merge_adjacent([window(1, 10, 0.6), window(1, 12.5, 0.3)])
    assert [(s.start_s, s.end_s) for s in spans] == [(10, 15)]


def test_example_spans_parse() -> None:
    assert parse_span("a.wav") == ("a.wav", None, None)
    assert parse_span("dir/a@b.wav@1:02-1:07.5") == ("dir/a@b.wav", 62.0, 67.5)
    assert parse_span("a.wav@3-") == ("a.wav", 3.0, None)
    with pytest.raises(QueryError):
        parse_span("a.wav@x-2")


def test_the_lance_store_builds_an_ann_index_that_keeps_recall(tmp_path: Path) -> None:
    from soundsift.search.stores.lance import LanceStore

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, 32))  # embeddings of sounds cluster; uniform noise would not
    vectors = (centres[rng.integers(0, 60, 3000)] + rng.normal(scale=0.15, size=(3000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = LanceStore(tmp_path / "v.lance", 32)
    ids = np.arange(3000)
    store.add(WindowRows(ids, ids // 10, (ids % 10) * 2.5, (ids % 10) * 2.5 + 5, vectors))
    store.optimize(ann_threshold=1000)
    assert store.has_ann_index()
    recall = []
    for query in vectors[:20] + rng.normal(scale=0.05, size=(20, 32)).astype(np.float32):
        exact = {c.id for c in store.search(query, 10, exact=True)}
        approximate = {c.id for c in store.search(query, 10)}
        recall.append(len(exact & approximate) / 10)
    assert np.mean(recall) >= 0.9
    store.delete_files([0, 1])
    assert store.count() == 2980
    assert {c.file_id for c in store.search(vectors[5], 5, file_ids=[7, 8])} <= {7, 8}


def test_cli_index_and_search(tmp_path: Path, tiny_model_dir: Path, library_folder: Path, capsys) -> None:
    index = str(tmp_path / "cli-index")
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(["index", str(library_folder), "--index", index, "--json", "--no-progress", *model]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 7 and report["failed"][0]["error"] == "audio_decode_error"
    assert main(["index", str(library_folder), "--index", index, "--no-progress"]) == 0
    assert "0 added" in capsys.readouterr().out

    clip = library_folder / "sub" / "clip3.wav"
    assert main(["search", "--like", str(clip), "--index", index, "--top", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hits"][0]["path"] == str(clip.resolve()) and len(result["hits"]) == 2
    assert main(["search", "--like", f"{library_folder / 'long.flac'}@20-25", "--index", index, "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "long.flac" in out and "1 hits from 21 windows (exact search)" in out
    assert main(["search", "door slamming -music", "--index", index, "--path", "*/sub/*", "--after", "2000-01-01"]) == 0
    assert "/sub/" in capsys.readouterr().out

    assert main(["search", "--index", index]) == 2
    assert main(["search", "rain", "--index", index, "--after", "yesterday"]) == 2
    assert main(["search", "rain", "--index", index, "--top", "0"]) == 2
    assert main(["search", "rain", "--index", str(tmp_path / "none")]) == 1
    assert "holds no index yet" in capsys.readouterr().err
    assert main(["search", "--like", str(tmp_path / "missing.wav"), "--index", index]) == 1
    assert main(["index", "--status", "--index", index]) == 0
    assert "7 files, 21 windows" in capsys.readouterr().out


def test_the_qdrant_store_in_local_mode(tmp_path: Path, classifier: Classifier, library_folder: Path) -> None:
    """The Qdrant backend's calls, through qdrant-client's embedded mode (a real server is not
    reachable from the test machines: `qdrant:http://...` is untested against one)."""
    pytest.importorskip("qdrant_client")
    library = Library(tmp_path / "index", classifier=classifier, store="qdrant:local")
    assert library.add([library_folder]).added == 7
    clip = library_folder / "sub" / "clip1.wav"
    assert library.search(like=str(clip), top=1).hits[0].path == str(clip.resolve())
    clip.unlink()
    assert library.add([library_folder]).removed == 1
    assert library.status().windows == 20 and library.search(text="rain", top=50, path_glob="*/sub/*").hits
    library.close()
    with pytest.raises(IndexMismatchError):
        Library(tmp_path / "index", classifier=classifier, store="lance").search(text="rain")


@pytest.mark.slow
def test_the_ray_engine_indexes_the_same_windows(tmp_path: Path, tiny_model_dir: Path, library_folder: Path) -> None:
    """`soundsift index --engine ray` in its own process (Ray starts a private local instance)."""
    pytest.importorskip("ray")
    index = tmp_path / "index"
    command = [sys.executable, "-m", "soundsift", "index", str(library_folder), "--index", str(index), "--json"]
    command += ["--engine", "ray", "--model", str(tiny_model_dir), "--device", "cpu", "--no-progress"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_DEDUP_LOGS": "0"}
    )
    assert done.returncode == 1, done.stderr[-2000:]  # the corrupt file
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["added"], len(report["failed"]), report["windows_added"]) == (7, 1, 21)
    assert report["failed"][0]["error"] == "audio_decode_error"
    library = Library(index, model=str(tiny_model_dir), device="cpu")
    clip = library_folder / "clip2.wav"
    assert library.search(like=str(clip), top=1).hits[0].path == str(clip.resolve())


def test_a_taught_adapter_reranks_text_search(tmp_path: Path, tiny_model_dir: Path) -> None:
    """'clicks' means nothing to the random model's text encoder; taught from three clips, the
    same words find the click recordings first."""
    from soundsift import Adapter
    from tests.test_adapters import RATE, SOUNDS, synthetic, write_examples

    library_folder = tmp_path / "recordings"
    for kind in SOUNDS:
        for variant in range(4, 8):
            path = library_folder / f"{kind}-{variant}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, synthetic(kind, variant, seconds=5.0), RATE)
    plain = Classifier(model=str(tiny_model_dir), device="cpu")
    adapter = Adapter.fit(plain, write_examples(tmp_path / "examples", shots=3))
    taught = Classifier(model=str(tiny_model_dir), device="cpu", adapter=adapter)
    with Library(tmp_path / "index", classifier=taught) as library:
        library.add([str(library_folder)])
        hits = library.search("clicks", top=4).hits
    assert [Path(hit.path).name.split("-")[0] for hit in hits] == ["clicks"] * 4
    with Library(tmp_path / "index", classifier=plain) as library:
        zero_shot = library.search("clicks", top=4).hits
    assert [Path(hit.path).name.split("-")[0] for hit in zero_shot] != ["clicks"] * 4


def _index_as_a_user(tiny_model_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`soundsift index` in its own process, bound by file permissions even when the tests run as root."""
    command = [*without_read_override(), sys.executable, "-m", "soundsift", "index", *argv, "--json", "--no-progress"]
    command += ["--model", str(tiny_model_dir), "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # CLI in a subprocess
@pytest.mark.parametrize("locked", ["sub", "."], ids=["a-sub-folder", "the-library-folder"])
def test_an_unreadable_folder_removes_nothing_and_fails_the_run(
    tmp_path: Path, tiny_model_dir: Path, library_folder: Path, locked: str
) -> None:
    index = tmp_path / "index"
    first = _index_as_a_user(tiny_model_dir, str(library_folder), "--index", str(index))
    assert first.returncode == 1 and json.loads(first.stdout)["added"] == 7  # the corrupt file
    folder = (library_folder / locked).resolve()
    folder.chmod(0)
    try:
        locked_run = _index_as_a_user(tiny_model_dir, str(library_folder), "--index", str(index))
        allowed = _index_as_a_user(tiny_model_dir, "--index", str(index), "--allow-unreadable")
    finally:
        folder.chmod(0o755)
    report = json.loads(locked_run.stdout)
    assert locked_run.returncode == 1, locked_run.stderr[-2000:]
    assert report["removed"] == 0 and [item["path"] for item in report["unreadable"]] == [str(folder)]
    assert report["unreadable"][0]["error"] == "folder_unreadable"
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["removed"] == 0, allowed.stderr[-2000:]
    library = Library(index, model=str(tiny_model_dir), device="cpu")
    assert library.status().files_indexed == 7, "every indexed file under the unreadable folder is kept"
    # Readable again, a file really deleted there is dropped as before.
    (library_folder / "sub" / "clip3.wav").unlink()
    assert library.add([library_folder]).removed == 1


def test_index_usage_errors_create_nothing(tmp_path: Path, tiny_model_dir: Path, library_folder: Path, run) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    code, _, err = run("index", str(library_folder), "--index", str(a_file))
    assert code == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and a_file.read_text() == "x"
    index = tmp_path / "new-index"
    code, _, err = run("index", str(tmp_path / "no-such-library"), "--index", str(index))
    assert code == 2 and "no such file or folder" in err and len(err.strip().splitlines()) == 1, err
    assert not index.exists(), "a typo in the library path creates no index folder"
    code, _, err = run("index", "--index", str(index))
    assert code == 2 and "nothing to index" in err and not index.exists()


def test_a_query_of_exclusions_alone_is_refused_and_an_exclusion_description_applies_to_all(
    library: Library, library_folder: Path
) -> None:
    library.add([library_folder])
    for query in ("-", "-music", "(not music)", "-music, (not speech)"):
        with pytest.raises(QueryError, match="names no sound to look for"):
            library.search(text=query)
    separate = library.search(text="rain, -music", top=5)
    inline = library.search(text="rain -music", top=5)
    assert separate.excluded == inline.excluded == ["music"]
    assert [hit.path for hit in separate.hits] == [hit.path for hit in inline.hits]
