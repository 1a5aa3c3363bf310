from __future__ import annotations

import pytest

from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers
from scotsearch.layers import layer_specs
from scotsearch.layers import parse_layers


def test_receptive_fields_reproduce_reference_table() -> None:
    # reference-behaviour.md §2: hard-coded jsz / rfsz for base ids 0..9
    jsz = [4, 4, 4, 4, 8, 8, 8, 8, 16, 16]
    rfsz = [11, 19, 27, 35, 43, 59, 75, 91, 107, 139]
    for backbone in ("resnet50", "resnet101"):
        specs = layer_specs(backbone)
        assert [s.stride for s in specs[:10]] == jsz
        assert [s.rf for s in specs[:10]] == rfsz
    r50 = layer_specs("resnet50")
    assert [s.rf for s in r50[10:]] == [171, 203, 235, 267, 299, 363, 427]


def test_layer_tables() -> None:
    r50, r101 = layer_specs("resnet50"), layer_specs("resnet101")
    assert len(r50) == 17 and len(r101) == 34
    assert [s.channels for s in r50] == [64] + [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert [s.stride for s in r101] == [4] * 4 + [8] * 4 + [16] * 23 + [32] * 3
    assert (r101[30].stage, r101[30].block) == (3, 22)


def test_parse_layers_normalises_and_rejects() -> None:
    assert parse_layers("(2,22,24)", "resnet101") == (2, 22, 24)
    assert parse_layers("24, 2,22,2", "resnet101") == (2, 22, 24)
    assert parse_layers([3, 1], "resnet50") == (1, 3)
    assert format_layers((30, 0, 19)) == "0,19,30"
    with pytest.raises(ConfigError, match="do not exist"):
        parse_layers("0,17", "resnet50")
    with pytest.raises(ConfigError):
        parse_layers("a,b", "resnet50")
    with pytest.raises(ConfigError):
        parse_layers("", "resnet50")
