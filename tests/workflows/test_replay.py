"""Replays the committed histories of every terminal path: a nondeterministic workflow change fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.histories.record import TERMINAL_PATHS
from workflows.resource_transfer import ResourceTransfer

HISTORIES = Path(__file__).parent.parent / "histories"


def test_every_terminal_path_has_a_committed_history() -> None:
    assert sorted(p.stem for p in HISTORIES.glob("*.json")) == sorted(TERMINAL_PATHS)


@pytest.mark.parametrize("path", TERMINAL_PATHS)
async def test_history_replays_without_nondeterminism(path: str) -> None:
    history = WorkflowHistory.from_json(f"replay-{path}", (HISTORIES / f"{path}.json").read_text())
    replayer = Replayer(workflows=[ResourceTransfer], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
