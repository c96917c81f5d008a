"""Build hook: ship top-level trees the package reads at run time inside the package.

- ``data_cards/*.md`` -> ``chimed_trl/data_cards/`` (the one source of truth for the cards);
- ``recipes/tiny/*.yaml`` and ``accelerate_configs/*.yaml`` -> ``chimed_trl/bundled/`` (so ``chimed-trl demo``
  and a config naming ``recipes/tiny/...`` run from any directory with a non-editable install).

A source checkout or an editable install reads the top-level folders themselves;
``chimed_trl.data.cards.cards_dir`` and ``chimed_trl.bundled.bundled_root`` look in that order.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = {  # source glob (relative to the repository) -> folder inside the built package
    "data_cards/*.md": "data_cards",
    "recipes/tiny/*.yaml": "bundled/recipes/tiny",
    "accelerate_configs/*.yaml": "bundled/accelerate_configs",
}


class BuildPyWithShippedFiles(build_py):
    def run(self):
        super().run()
        for pattern, folder in SHIPPED.items():
            target = Path(self.build_lib) / "chimed_trl" / folder
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(ROOT.glob(pattern)):
                self.copy_file(str(file), str(target / file.name))


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
