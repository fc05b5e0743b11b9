from setuptools import find_packages, setup

setup(
    name="mdnas_fairseq",
    version="0.1.0",
    description="Concordant multi-domain differentiable architecture search as a fairseq plugin",
    packages=find_packages(include=["mdnas_fairseq", "mdnas_fairseq.*"]),
    python_requires=">=3.10",
    # torch and fairseq-fixed are installed by the Makefile in a fixed order (fairseq-fixed is
    # compiled against the installed torch with --no-build-isolation), so they are not listed here.
    install_requires=["numpy<2", "scipy", "sentencepiece", "sacrebleu"],
    extras_require={
        "vision": ["mlxtend==0.23.4", "pandas<3", "matplotlib"],
        "viz": ["graphviz", "matplotlib", "tensorboardX"],
        "test": ["pytest", "pytest-xdist", "ruff==0.17.6"],
        "all": [
            "mlxtend==0.23.4",
            "pandas<3",
            "matplotlib",
            "graphviz",
            "tensorboardX",
            "pytest",
            "pytest-xdist",
            "ruff==0.17.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "mdnas-derive=mdnas_fairseq.derive:main",
            "mdnas-prepare=mdnas_fairseq.data.prepare.cli:main",
            "mdnas-draw=mdnas_fairseq.viz.draw:main",
            "mdnas-report=mdnas_fairseq.viz.report:main",
        ]
    },
)
