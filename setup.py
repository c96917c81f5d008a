"""Build hook: ship the top-level ``data_cards/`` (the one source of truth for the cards) inside the package.

A wheel (and ``pip install .``) gets ``chimed_trl/data_cards/*.md``; a source checkout or an editable
install reads ``data_cards/`` itself. ``chimed_trl.data.cards.cards_dir`` looks in that order.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithCards(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "chimed_trl" / "data_cards"
        target.mkdir(parents=True, exist_ok=True)
        for card in sorted(Path(__file__).resolve().parent.joinpath("data_cards").glob("*.md")):
            self.copy_file(str(card), str(target / card.name))


setup(cmdclass={"build_py": BuildPyWithCards})
