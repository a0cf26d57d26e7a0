from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def requirements(*names: str) -> list[str]:
    """The requirement lines of requirements/<name>.txt for each name (the runtime image installs runtime.txt
    alone; requirements/constraints.txt pins the exact versions CI tested)."""
    lines = [line for name in names for line in (HERE / "requirements" / f"{name}.txt").read_text().splitlines()]
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="medsam-lite",
    version="0.1.0",
    description="Exact, fast CPU inference and evaluation for LiteMedSAM (CVPR 'MedSAM on Laptop' format)",
    packages=find_packages(include=["medsam_lite", "medsam_lite.*", "evaluation", "evaluation.*"]),
    package_data={"medsam_lite.serve": ["static/*"]},  # the web page
    python_requires=">=3.10",
    install_requires=requirements("runtime", "evaluate", "io"),
    extras_require={
        # torch: the torch engine and `medsam-lite export` (the OpenVINO engine runs without it)
        "torch": requirements("torch"),
        "int8": requirements("torch", "int8"),
        # viewers: the service's nnInteractive protocol (blosc2 arrays)
        "viewers": requirements("viewers"),
        "test": requirements("torch", "int8", "viewers", "test"),
        "bench": requirements("bench"),
    },
    entry_points={"console_scripts": ["medsam-lite=medsam_lite.cli:entry"]},
)
