from pathlib import Path

from setuptools import find_packages, setup

TORCH = "torch==2.13.0"  # a CPU build: any other version pulls several GB of CUDA packages
HERE = Path(__file__).resolve().parent


def requirements(name: str) -> list[str]:
    """The requirement lines of requirements/<name>.txt (the runtime image installs runtime.txt alone)."""
    lines = (HERE / "requirements" / f"{name}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="medsam-lite",
    version="0.1.0",
    description="Exact, fast CPU inference and evaluation for LiteMedSAM (CVPR 'MedSAM on Laptop' format)",
    packages=find_packages(include=["medsam_lite", "medsam_lite.*", "evaluation", "evaluation.*"]),
    python_requires=">=3.10",
    install_requires=requirements("runtime") + requirements("evaluate"),
    extras_require={
        # torch: the torch engine and `medsam-lite export` (the OpenVINO engine runs without it)
        "torch": [TORCH],
        "int8": [TORCH, "nncf>=2.10"],
        "test": ["pytest>=7", TORCH, "nncf>=2.10"],
        "bench": ["matplotlib>=3.7", "pandas>=2.0", "surface-distance>=0.1"],
    },
    entry_points={"console_scripts": ["medsam-lite=medsam_lite.cli:main"]},
)
