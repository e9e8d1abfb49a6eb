"""`cloudsplit serve` leaves batching off unless asked: with warm interpreters per batch size it still
did not pay (-7 % to +4 % at 8-16 clients; benchmarks/README.md, "Server batching"); `--batching`
turns it on, `--batch-padding` pads batches up to a power of two instead of splitting them."""
from __future__ import annotations

import argparse

from cloudsplit.server import add_serve_parser


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", "--models", "models", *argv])


def test_serve_does_not_batch_by_default():
    assert _parse().batching is False


def test_batching_flag_turns_it_on_and_no_batching_off():
    assert _parse("--batching").batching is True
    assert _parse("--batching", "--no-batching").batching is False


def test_batch_padding_flag():
    assert _parse("--batching").batch_padding is False
    assert _parse("--batching", "--batch-padding").batch_padding is True
