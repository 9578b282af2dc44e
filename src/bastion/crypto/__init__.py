"""Cryptography, the lowest layer: signing keys (file or PKCS#11 HSM), Shamir secret sharing
and sealed keys, a private-sum MPC protocol, Merkle trees and Pedersen-commitment proofs.

Every primitive comes from a vetted library (``cryptography``, pycryptodome, python-pkcs11);
the modules here compose them into protocols and say in their docstrings what each gives.
"""
