from setuptools import find_packages, setup

setup(
    name="eagle",
    version="0.1.0",
    description="Peer-to-peer container image distribution over BitTorrent",
    long_description=open("README.rst").read(),
    python_requires=">=3.11",
    packages=find_packages(include=["eagle", "eagle.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["eagle_plugins.py"]},
    install_requires=[
        "twisted[conch]>=23.10",  # conch: the manhole
        "klein>=23.5",
        "treq>=23.11",
        "libtorrent>=2.0.9",
        "txredisapi>=1.4.10",
        "boto3>=1.28",
        "service-identity>=23.1",
        "cryptography>=41",  # eagle/tls.py reads private CAs' certificates
        "pyyaml>=6.0",
        "prometheus-client>=0.19",
        "dacite>=1.8",
        "rich>=13",
        "werkzeug>=2",
    ],
    # ruff is pinned: a new release's rules must not fail the suite by surprise.
    extras_require={
        "test": [
            "hypothesis>=6.90",
            "ruff==0.17.6",
            "moto[server]>=5",
            "kubernetes-validate>=1.30",
            "pillow>=10",
            "docutils>=0.20",
        ],
        "bench": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["eagle = eagle.cli:main"]},
)
