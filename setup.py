from setuptools import find_packages, setup

TORCH = "torch==2.13.0"  # a CPU build: any other version pulls several GB of CUDA packages

setup(
    name="medsam-lite",
    version="0.1.0",
    description="Exact, fast CPU inference and evaluation for LiteMedSAM (CVPR 'MedSAM on Laptop' format)",
    packages=find_packages(include=["medsam_lite", "medsam_lite.*", "evaluation", "evaluation.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "click>=8.1",
        "tqdm>=4.60",
        "scipy>=1.10",
        "openvino>=2024.0",
    ],
    extras_require={
        # torch: the torch engine and `medsam-lite export` (the OpenVINO engine runs without it)
        "torch": [TORCH],
        "int8": [TORCH, "nncf>=2.10"],
        "test": ["pytest>=7", TORCH, "nncf>=2.10"],
        "bench": ["matplotlib>=3.7", "pandas>=2.0", "surface-distance>=0.1"],
    },
    entry_points={"console_scripts": ["medsam-lite=medsam_lite.cli:main"]},
)
