"""The feature cache's disk estimate: close to what is written, and a build that would not
fit is refused before any work."""

from __future__ import annotations

import math
from pathlib import Path

from scotsearch import cli
from scotsearch.cache import entry_bytes
from scotsearch.cache import info
from scotsearch.cache._format import features_dir_of
from scotsearch.layers import layer_specs


def test_entry_bytes_by_hand() -> None:
    # float16 maps at ceil(H / stride) x ceil(W / stride), the float32 CAM, the header
    H, W = 225, 300
    by_hand = 8192 + 4 * H * W + sum(2 * s.channels * math.ceil(H / s.stride)
                                     * math.ceil(W / s.stride) for s in layer_specs("resnet50"))
    assert entry_bytes("resnet50", (H, W)) == by_hand
    # ResNet-50's stem (64 x 57 x 75) alone is 547,200 bytes
    assert by_hand > 2 * 64 * 57 * 75


def test_estimate_is_within_20_percent_of_the_demo_cache(tmp_path: Path, capsys) -> None:
    argv = ["cache", "--backbone", "resnet50", "--weights", "random", "--image-side", "96",
            "--cache-dir", str(tmp_path), "--split", "val"]
    assert cli.main(argv) == 0
    data = info(features_dir_of(tmp_path))
    (key,) = data["keys"]
    assert key["entries"] == 30
    assert abs(key["estimated_bytes"] - key["bytes"]) <= 0.2 * key["bytes"]
    capsys.readouterr()
    assert cli.main(["cache", "--info", "--cache-dir", str(tmp_path)]) == 0
    assert "(estimated" in capsys.readouterr().out


def test_a_build_that_does_not_fit_is_refused_before_any_work(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    import shutil

    from scotsearch.cache import _estimate

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(_estimate.shutil, "disk_usage",
                        lambda p: usage._replace(free=1_000_000))  # 1 MB free
    for cmd in (["cache"], ["evaluate", "--layers", "0,1"]):
        argv = [*cmd, "--backbone", "resnet50", "--weights", "random", "--image-side", "96",
                "--cache-dir", str(tmp_path), "--split", "val"]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not enough disk space for the feature cache" in err[0]
        assert "30 new entries need about" in err[0]
    features = features_dir_of(tmp_path)
    assert not features.exists() or not any(features.rglob("*.safetensors"))


