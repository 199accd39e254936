"""Option values the CLI reads itself."""
from __future__ import annotations

import click
import pytest

from modelc_build.cli import MemorySize


@pytest.mark.parametrize(("text", "size"), [("6G", 6 * 2**30), ("3500M", 3500 * 2**20), ("1.5GiB", int(1.5 * 2**30)),
                                            ("512mb", 512 * 2**20), ("1048576", 2**20), ("2t", 2 * 2**40)])
def test_a_memory_size_reads_as_people_write_it(text: str, size: int) -> None:
    assert MemorySize().convert(text, None, None) == size


@pytest.mark.parametrize("text", ["lots", "6X", "", "-1G", "0"])
def test_a_memory_size_that_is_not_one_says_how_to_write_it(text: str) -> None:
    with pytest.raises(click.BadParameter, match="memory size"):
        MemorySize().convert(text, None, None)
