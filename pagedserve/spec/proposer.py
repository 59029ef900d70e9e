"""What the runner needs of a draft proposer: guesses of the next tokens of several requests."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class DraftProposer(Protocol):
    """Proposes draft tokens; the model verifies them, so a wrong guess costs time, never output."""

    def propose(self, request_ids: Sequence[str], contexts: Sequence[np.ndarray],
                num_drafts: Sequence[int]) -> list[np.ndarray]:
        """For each request, up to num_drafts[i] guesses of the tokens that follow contexts[i]
        (its prompt then every output so far, int32 [len]); an empty array when it has none.

        Must not keep or change the contexts (they are views of the runner's state).
        """
        ...
