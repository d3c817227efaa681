"""The registry: checklist id → the campaign that measures it; ids measured by another id's campaign."""

from __future__ import annotations

from .checkpoints import campaign_a3, campaign_checkpoint_faults
from .distributed import campaign_dist_faults, campaign_elastic
from .formats import campaign_a7
from .huge_line import campaign_e3
from .kills import campaign_kill_and_term
from .payloads import campaign_c1, campaign_c2
from .pytest_items import campaign_pytest
from .resume import campaign_resume
from .serve import campaign_serve, campaign_soak
from .spikes import campaign_d4
from .tokenizers import campaign_h3
from .word2vec import campaign_i6

# One line per campaign (and one per campaign in ALIASES), so that campaigns added side by side merge cleanly.
CAMPAIGNS = {
    "A1": campaign_checkpoint_faults,
    "A2": campaign_kill_and_term,
    "A3": campaign_a3,
    "A7": campaign_a7,
    "B2": campaign_resume,
    "C1": campaign_c1,
    "C2": campaign_c2,
    "D4": campaign_d4,
    "E3": campaign_e3,
    "F6": campaign_serve,
    "F12": campaign_soak,
    "G1": campaign_elastic,
    "G3": campaign_dist_faults,
    "H3": campaign_h3,
    "I6": campaign_i6,
    "pytest": campaign_pytest,
}
ALIASES = {
    "A4": "A1", "A5": "A1",
    "B1": "A2", "G4": "A2",
    "B3": "B2",
    "F8": "F6", "F10": "F6", "F13": "F6",
    "G2": "G3", "G5": "G3",
}
