"""README.md documents every setting: its table is what scripts/settings_table.py makes."""

from __future__ import annotations

import runpy
from pathlib import Path

from modelhub.settings import Settings

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "settings_table.py"


def test_every_setting_is_described_and_in_the_readme():
    script = runpy.run_path(str(SCRIPT))
    readme = script["README"].read_text()
    block = readme[
        readme.index(script["BEGIN"]) + len(script["BEGIN"]) : readme.index(script["END"])
    ]
    assert block.strip() == script["table"](), "run: python scripts/settings_table.py --write"
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description="
        assert f"`MODELHUB_{name.upper()}`" in block
