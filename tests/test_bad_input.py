"""A catalogue of damaged inputs and faults, each run through the CLI as a user would.

Every case asserts the exit status, that stderr is one line naming the problem (no
traceback), and that nothing was left behind: the folder the command ran in holds the same
files afterwards. Reader-level and cache-level cases that need no process check the same
property (one clear error naming the file) in-process.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from storage_workers import open_and_create

from scotsearch.cache import FeatureCache
from scotsearch.cache._format import EntryError
from scotsearch.cache._format import make_key
from scotsearch.cache._format import read_entry
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import check_pair
from scotsearch.data.pfpascal import read_pfpascal
from scotsearch.data.spair import read_spair
from scotsearch.errors import DataError
from scotsearch.features import ImageFeatures
from scotsearch.layers import n_layers
from scotsearch.memory import largest_side
from scotsearch.memory import pair_bytes
from scotsearch.presets import get_profile


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_cli(
    cwd: Path, *args: str, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("SCOTSEARCH_STORAGE", None)
    env.pop("OPTUNA_STORAGE", None)
    return subprocess.run([*prefix, sys.executable, "-m", "scotsearch", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def refused(
    cwd: Path, *args: str, says: str, status: int = 2, prefix: Sequence[str] = ()
) -> str:
    """Run the CLI in ``cwd``; assert one error line containing ``says`` and no new file."""
    before = snapshot(cwd)
    r = run_cli(cwd, *args, prefix=prefix)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("scotsearch: error: "), r.stderr
    assert says in lines[0], lines[0]
    assert snapshot(cwd) == before, sorted(snapshot(cwd) ^ before)
    return lines[0]


#: The smallest real run of a command on the demo data: 2 pairs, 64 px, random weights.
FAST = ("--dataset", "demo", "--max-pairs", "2", "--image-side", "64", "--backbone",
        "resnet50", "--weights", "random", "--engine", "eager")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data, written once for this module (pass it as ``--datapath``)."""
    from scotsearch.data.demo import ensure_demo

    root = tmp_path_factory.mktemp("demo")
    ensure_demo(root)
    return root


# ----------------------------------------------------------------------------- storage


@pytest.mark.parametrize("url, form", [
    ("sqlite:/x.db", "sqlite:///relative/path.db"),
    ("sqlite:x.db", "sqlite:////absolute/path.db"),
    ("postgresql:/db", "postgresql://user:password@host:port/database"),
])
def test_malformed_storage_url_is_refused(tmp_path: Path, url: str, form: str) -> None:
    # Before: 'sqlite:/x.db' became a relative file ./sqlite:/x.db with exit 0.
    line = refused(tmp_path, "studies", "--storage", url, says="malformed storage URL")
    assert form in line


def test_damaged_journal_names_the_file(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    log.write_text('{"op_code": 0, "worker_id": "a"\nnot json at all\n')
    line = refused(tmp_path, "studies", "--storage", str(log), says="is damaged")
    assert str(log) in line


def _storage_failure(url: str, cwd: Path) -> str:
    """Open (create) a storage as beam and tune do; return the CLI's line for the failure."""
    from scotsearch import cli
    from scotsearch.study import open_shared_storage

    before = snapshot(cwd)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with pytest.raises(Exception) as err:
            open_shared_storage(url)
    finally:
        os.chdir(old)
    assert snapshot(cwd) == before, sorted(snapshot(cwd) ^ before)
    line = cli.user_error(err.value)
    assert line is not None and "\n" not in line, err.value
    return line


def test_new_database_under_a_file_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert "afile" in _storage_failure("afile/sub/s.db", tmp_path)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_workers_starting_together_on_a_new_database(tmp_path: Path, kind: str) -> None:
    # Before: 3 of 5 tries had one worker fail with "table studies already exists".
    from scotsearch.study import list_studies

    n = 4
    for attempt in range(2):
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path}/new{attempt}.db"
        else:
            url = f"journal:{tmp_path}/new{attempt}.log"
        results = _open_together(url, n)
        assert results == ["ok"] * n, results
        assert [r["study"] for r in list_studies(url)] == ["s"]


def _open_together(url: str, n: int) -> list[str]:
    """``n`` spawned processes open ``url`` and create study ``s`` at the same moment (a
    barrier releases them); each one's result, ``ok`` or its error."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    start = ctx.Barrier(n)
    procs = [ctx.Process(target=open_and_create, args=(url, "s", q, start)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [q.get(timeout=5) for _ in procs]


def test_workers_starting_together_on_a_new_postgresql_database(postgres_url: str) -> None:
    # Before: retried on "duplicate key value violates unique constraint" (Optuna's schema
    # creation races); now the first worker creates the schema under an advisory lock and
    # the others wait for it, with no retry needed.
    from sqlalchemy import create_engine
    from sqlalchemy import text

    n = 6
    results = _open_together(postgres_url, n)
    assert results == ["ok"] * n, results
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as con:
            assert con.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert con.execute(text("SELECT count(*) FROM studies")).scalar() == 1
            # the lock is released: nobody holds an advisory lock any more
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            assert con.execute(text(held)).scalar() == 0
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- outputs


def test_export_into_a_folder_is_refused_before_reading(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    refused(tmp_path, "export", "--study", "s", "--storage", "none.db", "-o", "out",
            says="is a folder")


def test_export_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("x")
    refused(tmp_path, "export", "--study", "s", "--storage", "none.db", "-o", "f.csv/x.csv",
            says="is a file")


def test_evaluate_output_checked_before_the_work(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    # No dataset exists here either: the output is refused first, so no data is written.
    refused(tmp_path, "evaluate", "--dataset", "spair", "--datapath", "nowhere",
            "--output", "f/result.json", says="is a file")


def test_verbose_adds_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    r = run_cli(tmp_path, "-v", "export", "--study", "s", "--storage", "none.db", "-o", "out")
    assert r.returncode == 2
    assert "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].startswith(
        "scotsearch: error: ")


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 256 KB tmpfs, nearly full; skipped where mounting is not allowed."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        # Nearly full: a few KB left, so files open but a database's tables do not fit.
        (mnt / "filler").write_bytes(b"\0" * (256 * 1024 - 8 * 4096))
        yield mnt
    finally:
        # Lazy: a file a failing command left open must not keep the mount alive.
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_new_database_on_a_full_disk(full_disk: Path) -> None:
    # Before: 14 lines of SQL and a partial database file.
    line = _storage_failure("s.db", full_disk)
    assert "cannot open study storage sqlite:///s.db" in line, line
    assert "the disk of . is full" in line, line  # SQLite's own text is "disk I/O error"


def _synthetic_evaluator():
    """An evaluator over synthetic features and pairs (scores in milliseconds)."""
    from scotsearch.config import MatchConfig
    from scotsearch.evaluate import Evaluator
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    ds = synthetic_dataset(4, image_hw=(32, 48), n_kps=5, seed=1)
    src = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    return Evaluator(ds, src, match=MatchConfig(similarity="cos", rhm=False),
                     profile=get_profile("scot"))


def _fill(folder: Path) -> None:
    """Take the last free bytes of ``folder``'s file system (files can still be created)."""
    fd = os.open(folder / "filler-rest", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_export_on_a_full_disk(tmp_path: Path, full_disk: Path) -> None:
    # Before: a traceback. Now refused by the destination check, before the study is read.
    from scotsearch.search.beam_study import run_beam

    run_beam(_synthetic_evaluator(), study="s", storage=f"sqlite:///{tmp_path}/s.db", beam=2,
             max_layers=1, layers=range(3))
    _fill(full_disk)
    line = refused(full_disk, "export", "--study", "s", "--storage", str(tmp_path / "s.db"),
                   "-o", "out/pairs.csv", says="No space left on device")
    assert "out/pairs.csv" in line


def test_evaluate_output_on_a_full_disk(full_disk: Path) -> None:
    # Before: the evaluation ran, then the result could not be written (a traceback). The
    # dataset does not exist: the output is refused first, before any work.
    _fill(full_disk)
    refused(full_disk, "evaluate", "--dataset", "spair", "--datapath", "nowhere",
            "--output", "result.json", says="--output result.json cannot be written: No space")


def test_atomic_write_on_a_full_disk(full_disk: Path) -> None:
    # What writes late (the cache, a result that outgrew the space the check saw): the
    # error names the file, and neither the temporary nor the folders made for it remain.
    from scotsearch._io import atomic_write

    before = snapshot(full_disk)
    final = full_disk / "a" / "b" / "big.json"
    with pytest.raises(OSError) as err:
        atomic_write(final, "x" * (64 * 1024))
    assert err.value.filename == str(final)
    assert snapshot(full_disk) == before, sorted(snapshot(full_disk) ^ before)


@pytest.mark.parametrize("fill", ["all", "nearly"])
def test_cache_on_a_full_disk(full_disk: Path, demo_root: Path, fill: str) -> None:
    # Before: a traceback. Now the cache's disk estimate refuses the build before the
    # network is loaded and before any entry is written, whether the disk is full ("all")
    # or has room for the bookkeeping but not for the 3 demo images' entries ("nearly").
    # A write that fails later all the same goes through atomic_write (the test above).
    if fill == "all":
        _fill(full_disk)
    before = snapshot(full_disk)
    r = run_cli(full_disk, "evaluate", *FAST, "--datapath", str(demo_root))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("scotsearch: error: not enough disk space for the feature "
                               "cache: 3 new entries need about"), lines[0]
    left = snapshot(full_disk) - before
    # No entry, no temporary, no empty folder; at most the cache's small bookkeeping
    # files, complete (written atomically).
    files = {p for p in left if (full_disk / p).is_file()}
    assert {Path(p).name for p in files} <= {"weights.json", "manifest.json"}, sorted(left)
    for p in files:
        json.loads((full_disk / p).read_text())
    assert not [p for p in left if (full_disk / p).is_dir() and not any(
        (full_disk / p).iterdir())], sorted(left)
    if fill == "all":
        assert not left, sorted(left)


# ----------------------------------------------------------------------------- read-only


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A folder ``ro`` in ``tmp_path`` that the CLI cannot write to, and the command prefix
    that makes it so; skipped where that cannot be arranged.

    As root, mode bits bind only without CAP_DAC_OVERRIDE: the command runs as root still
    (so the interpreter, possibly under a 0700 /root, stays reachable) but with that
    capability dropped from its bounding set.
    """
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is not available")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]
    ro.chmod(0o555)
    probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(ro / 'p')!r}, 'w')"],
                           capture_output=True)
    if probe.returncode == 0:
        (ro / "p").unlink()
        pytest.skip("a folder without write permission is still writable here")
    yield ro, prefix
    ro.chmod(0o755)


@pytest.mark.parametrize("storage, says", [
    ("ro/s.db", "the folder ro is not writable"),
    ("journal:ro/s.log", "Permission denied: ro/s.log"),
])
def test_storage_in_a_read_only_folder(tmp_path: Path, demo_root: Path, read_only,
                                       storage: str, says: str) -> None:
    # Before: a traceback; then, for SQLite, "unable to open database file", naming no cause.
    _, prefix = read_only
    refused(tmp_path, "beam", *FAST, "--datapath", str(demo_root), "--no-cache",
            "--storage", storage, says=says, prefix=prefix)


@pytest.mark.parametrize("command", [
    ("evaluate", "--datapath", "nowhere", "--output", "ro/result.json"),
    ("export", "--study", "s", "--storage", "none.db", "-o", "ro/result.csv"),
])
def test_output_in_a_read_only_folder(tmp_path: Path, read_only, command: tuple[str]) -> None:
    # Refused before any work (the dataset here does not even exist).
    _, prefix = read_only
    line = refused(tmp_path, *command, says="cannot be written: Permission denied", prefix=prefix)
    assert "(ro)" in line


def test_cache_in_a_read_only_folder(tmp_path: Path, demo_root: Path, read_only) -> None:
    _, prefix = read_only
    refused(tmp_path, "evaluate", *FAST, "--datapath", str(demo_root), "--cache-dir",
            "ro/cache", says="Permission denied: ro/cache", prefix=prefix)


# ----------------------------------------------------------------------------- sizes


def test_memory_model_by_hand() -> None:
    # 300 px: 75 x 75 cells per image, 3 float32 [5625 x 5625] matrices + 4 histograms.
    assert pair_bytes(300, 8192, 2) == 3 * 5625 * 5625 * 4 + 8192 * 4 * 4
    side = largest_side(24 << 30, 8192, 2)
    assert pair_bytes(side, 8192, 2) <= 24 << 30 < pair_bytes(side + 4, 8192, 2)


@pytest.mark.parametrize("flag, value", [("--image-side", "40000"), ("--ncells", "2000000000")])
def test_sizes_that_cannot_fit_are_refused(tmp_path: Path, flag: str, value: str) -> None:
    line = refused(tmp_path, "beam", "--datapath", "demo", flag, value, "--storage", "s.db",
                   says="needs at least")
    assert "free" in line


# ----------------------------------------------------------------------------- readers


def _pair(**kw) -> Pair:
    base = dict(pair_id="p", category="c", src_path=Path("a.jpg"), trg_path=Path("b.jpg"),
                src_kps=np.array([[10.0, 10.0], [20.0, 30.0]]),
                trg_kps=np.array([[12.0, 11.0], [25.0, 28.0]]),
                src_bbox=np.array([0.0, 0.0, 50.0, 40.0]), trg_bbox=np.array([0.0, 0.0, 50, 40]))
    base.update(kw)
    return Pair(**base)


@pytest.mark.parametrize("box", [[10, 10, 10, 40], [10, 10, 40, 10], [40, 10, 10, 30]])
def test_degenerate_boxes_are_refused(box: list[float]) -> None:
    # Before: the pair scored 0 silently and the split's PCK fell from 75.99 to 31.25.
    with pytest.raises(DataError, match="zero or negative area"):
        check_pair(_pair(trg_bbox=np.array(box, dtype=float)))
    check_pair(_pair())  # the same pair with a proper box is fine


def test_zero_keypoint_extent_is_refused() -> None:
    kps = np.array([[5.0, 5.0], [5.0, 5.0]])
    with pytest.raises(DataError, match="extent is zero"):
        check_pair(_pair(trg_kps=kps, src_kps=kps + 1, trg_bbox=None, thres_kind="kps"))


def _spair(tmp_path: Path, layout_text: str, ann: dict) -> Path:
    root = tmp_path / "SPair-71k"
    (root / "PairAnnotation" / "val").mkdir(parents=True)
    (root / "Layout" / "large").mkdir(parents=True)
    (root / "JPEGImages" / "cat").mkdir(parents=True)
    (root / "PairAnnotation" / "val" / "000001-a-b:cat.json").write_text(json.dumps(ann))
    (root / "Layout" / "large" / "val.txt").write_bytes(layout_text.encode("utf-8"))
    return root


_ANN = {"src_kps": [[10, 10], [20, 30]], "trg_kps": [[12, 11], [25, 28]],
        "src_bndbox": [0, 0, 50, 40], "trg_bndbox": [0, 0, 50, 40]}


def test_split_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    # Before: "annotation not found" for a name starting with an invisible U+FEFF.
    root = _spair(tmp_path, "\ufeff000001-a-b:cat\n", _ANN)
    ds = read_spair(root, "val")
    assert [p.pair_id for p in ds.pairs] == ["000001-a-b:cat"]


def test_spair_zero_area_box_through_the_cli(tmp_path: Path) -> None:
    root = _spair(tmp_path, "000001-a-b:cat\n", dict(_ANN, trg_bndbox=[5, 5, 5, 40]))
    line = refused(tmp_path, "evaluate", "--dataset", "spair", "--datapath", str(root),
                   "--split", "val", says="zero or negative area")
    assert "000001-a-b:cat.json" in line


def test_infinite_keypoint_in_a_pfpascal_csv(tmp_path: Path) -> None:
    # Before: an 'inf' was taken for an invisible part (16 keypoints became 15).
    root = tmp_path / "PF-PASCAL"
    (root / "JPEGImages").mkdir(parents=True)
    csv = root / "test_pairs.csv"
    csv.write_text("source_image,target_image,class,XA,YA,XB,YB\n"
                   "x/a.jpg,x/b.jpg,1,1;inf,2;3,4;5,6;7\n")
    with pytest.raises(DataError, match="non-finite") as err:
        read_pfpascal(root, "test")
    assert "test_pairs.csv:2" in str(err.value)


# ----------------------------------------------------------------------------- cache


def _entry(tmp_path: Path) -> tuple[FeatureCache, str]:
    profile = get_profile("scot")
    key = make_key("resnet50", "0" * 64, profile)
    cache = FeatureCache(tmp_path / "cache", key, weights="random")
    g = torch.Generator().manual_seed(0)
    layers = {l: torch.randn(4, 3, 3, generator=g) for l in range(n_layers("resnet50"))}
    feats = ImageFeatures(layers=layers, image_size=(40, 60), ratio=0.5, orig_size=(80, 120),
                          cam=torch.rand(40, 60, generator=g))
    sha = "ab" * 32
    cache.put(sha, feats)
    return cache, sha


def _rewrite_meta(path: Path, **changes: str) -> None:
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta.update(changes)
    path.write_bytes(st_save(tensors, metadata=meta))


@pytest.mark.parametrize("field, value", [("ratio", "0.6"), ("image_size", "40,61"),
                                          ("exponents", None)])
def test_cache_metadata_is_checksummed(tmp_path: Path, field: str, value: str | None) -> None:
    # Before: one digit of the stored ratio changed gave PCK 0.00 and --verify found nothing.
    cache, sha = _entry(tmp_path)
    path = cache.path_for(sha)
    assert read_entry(path, key=cache.key.digest, image_sha=sha, layer_ids=None,
                      need_cam=True).ratio == 0.5
    if value is None:  # one layer's exponent changed
        value = json.dumps({**{str(l): 0 for l in range(n_layers("resnet50"))}, "3": 1},
                           sort_keys=True, separators=(",", ":"))
    _rewrite_meta(path, **{field: value})
    with pytest.raises(EntryError, match="metadata checksum"):
        read_entry(path, key=cache.key.digest, image_sha=sha, layer_ids=[0], need_cam=False,
                   check=False)
    assert not cache.has(sha)  # so the entry is rebuilt, not used


def test_cache_verify_reports_damaged_metadata(tmp_path: Path) -> None:
    cache, sha = _entry(tmp_path)
    _rewrite_meta(cache.path_for(sha), ratio="0.25")
    r = run_cli(tmp_path, "cache", "--verify", "--cache-dir", str(tmp_path / "cache"))
    assert "metadata checksum mismatch" in r.stdout + r.stderr


def test_garbage_manifest_is_rewritten_and_never_pruned(tmp_path: Path) -> None:
    from scotsearch.cache import prune

    cache, sha = _entry(tmp_path)
    manifest = cache.folder / "manifest.json"
    manifest.write_text("{ garbage")
    os.utime(cache.folder, (0, 0))  # old enough to be pruned if it were stale
    report = prune(cache.features_dir)
    assert cache.folder.is_dir() and cache.path_for(sha).is_file(), report.removed
    again = FeatureCache(tmp_path / "cache", cache.key, weights="random")
    again.put(sha, again.get(sha))
    assert json.loads(manifest.read_text())["key"] == cache.key.digest


# ----------------------------------------------------------------------------- beam lease


def test_second_beam_process_on_a_running_study_is_refused(tmp_path: Path) -> None:
    import time

    from scotsearch.study import LEASE_ATTR
    from scotsearch.study import BeamLease
    from scotsearch.study import open_storage
    from scotsearch.study import open_study

    st = open_storage(f"sqlite:///{tmp_path}/s.db")
    open_study("b", st)
    first = BeamLease(st, "b")
    first.acquire()
    try:
        with pytest.raises(Exception, match="being searched by another beam process") as err:
            BeamLease(st, "b").acquire()
        assert f"pid {os.getpid()}" in str(err.value)
    finally:
        first.release()
    with BeamLease(st, "b"):  # released: free again
        pass
    sid = st.get_study_id_from_name("b")
    # A lease not renewed for longer than STALE_S (its holder was killed) is taken over.
    st.set_study_system_attr(sid, LEASE_ATTR, {"token": "x", "host": "elsewhere", "pid": 1,
                                               "beat": time.time() - 3600})
    with BeamLease(st, "b"):
        pass
    # So is one whose holder on this host is gone.
    st.set_study_system_attr(sid, LEASE_ATTR, {"token": "x", "host": __import__("socket")
                                               .gethostname(), "pid": 2**22 + 12345,
                                               "beat": time.time()})
    with BeamLease(st, "b"):
        pass


def test_trial_of_a_killed_worker_is_requeued_at_once(tmp_path: Path) -> None:
    # Before: a rerun right after a killed tune counted the killed trial as another
    # worker's running one and ended one trial short; its heartbeat was not stale yet.
    import socket

    import optuna
    from optuna.trial import TrialState

    from scotsearch.study import WORKER_ATTR
    from scotsearch.study import open_shared_storage
    from scotsearch.study import open_study
    from scotsearch.study import recover_crashed_trials

    st = open_shared_storage(f"sqlite:///{tmp_path}/t.db")
    study = open_study("t", st)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    st.set_trial_system_attr(dead._trial_id, WORKER_ATTR,
                             {"host": socket.gethostname(), "pid": 2**22 + 12345})
    st.set_trial_system_attr(alive._trial_id, WORKER_ATTR,
                             {"host": socket.gethostname(), "pid": os.getpid()})
    recover_crashed_trials(study, st, stale_after=3600)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[dead.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING  # a live worker's trial is left alone
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [dead.params]


def test_nan_weights_are_blamed_on_the_weights(tmp_path: Path) -> None:
    # Before: "CAM has non-finite values", which blames the image.
    from scotsearch.backbones import load_backbone
    from scotsearch.errors import ScotsearchError

    state = load_backbone("resnet50", "random:seed0").net.state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(ScotsearchError, match=r"non-finite values .* layer2\.0\.conv1\.weight"):
        load_backbone("resnet50", str(path))


def test_unknown_dataset_of_a_config_row_is_named() -> None:
    # Before: "--dataset nope needs --datapath", naming the wrong problem.
    import argparse

    from scotsearch.commands import common
    from scotsearch.errors import ConfigError

    args = argparse.Namespace(dataset="nope", datapath=None, cache_dir="cache", split="val",
                              max_pairs=None, compat="scot")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        common.open_dataset(args)


def test_database_server_down_is_one_line(tmp_path: Path) -> None:
    # Before: three lines of SQLAlchemy text. Port 9 (discard) has no PostgreSQL server.
    pytest.importorskip("psycopg2")
    line = refused(tmp_path, "studies", "--storage",
                   "postgresql+psycopg2://scot@127.0.0.1:9/optuna", says="cannot open study")
    assert "127.0.0.1" in line


def test_beam_with_a_datapath_that_is_not_utf8(tmp_path: Path, demo_root: Path) -> None:
    # Before: UnicodeEncodeError in the study's pairs digest, after the study database was
    # created, while evaluate worked on the same folder. A name the OS hands over is valid.
    bad = Path(os.fsdecode(os.fsencode(tmp_path) + b"/demo-\xff"))
    try:
        shutil.copytree(demo_root, bad)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses a name that is not UTF-8")
    r = run_cli(tmp_path, "beam", *FAST, "--datapath", str(bad), "--no-cache", "--layers", "0,1",
                "--max-layers", "1", "--storage", "s.db")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "best layers" in r.stdout
    r = run_cli(tmp_path, "studies", "--storage", "s.db")
    assert r.returncode == 0 and "beam-demo-val-resnet50" in r.stdout, r.stderr
