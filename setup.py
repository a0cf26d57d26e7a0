from setuptools import find_packages, setup

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
        # A CPU build: any other version pulls several GB of CUDA packages.
        "torch==2.13.0",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["medsam-lite=medsam_lite.cli:main"]},
)
