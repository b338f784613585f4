"""One-off: 3D structures for molecules ase.build.molecule lacks (RDKit ETKDGv3, seed 42, MMFF94).

Writes toluene.xyz, phenol.xyz, alanine_dipeptide_conformers.xyz (one conformer per distinct
phi/psi region, up to six) and alanine_dipeptide.pdb (standard ACE/ALA/NME names) into the
folder given as the only argument. RDKit is not a dependency of mlff: run it in its own venv,
    python -m venv /tmp/rdk && /tmp/rdk/bin/pip install rdkit numpy
    /tmp/rdk/bin/python data/examples/make_structures_rdkit.py data/examples
"""
from rdkit import Chem
from rdkit.Chem import AllChem
import numpy as np, sys
out = sys.argv[1]
def write_xyz(mol, conf_ids, path, name):
    with open(path, 'w') as f:
        for cid in conf_ids:
            conf = mol.GetConformer(cid)
            f.write(f"{mol.GetNumAtoms()}\nname={name} source=\"RDKit ETKDGv3 seed 42, MMFF94 minimised\" conformer={cid}\n")
            for a in mol.GetAtoms():
                p = conf.GetAtomPosition(a.GetIdx())
                f.write(f"{a.GetSymbol()} {p.x:.6f} {p.y:.6f} {p.z:.6f}\n")
for name, smi in [("toluene", "Cc1ccccc1"), ("phenol", "Oc1ccccc1")]:
    m = Chem.AddHs(Chem.MolFromSmiles(smi)); AllChem.EmbedMolecule(m, randomSeed=42); AllChem.MMFFOptimizeMolecule(m)
    write_xyz(m, [0], f"{out}/{name}.xyz", name)
# capped alanine dipeptide ACE-ALA-NME; conformers spread over phi/psi
m = Chem.AddHs(Chem.MolFromSmiles("CC(=O)N[C@@H](C)C(=O)NC"))
ps = AllChem.ETKDGv3(); ps.randomSeed = 42
cids = list(AllChem.EmbedMultipleConfs(m, numConfs=30, params=ps))
AllChem.MMFFOptimizeMoleculeConfs(m)
from rdkit.Chem import rdMolTransforms as T
# backbone atoms (heavy atom indices in SMILES order): 0 CH3,1 C,2 O,3 N,4 CA,5 CB,6 C,7 O,8 N,9 CH3
sel, seen = [], []
for cid in cids:
    c = m.GetConformer(cid)
    phi = T.GetDihedralDeg(c, 1, 3, 4, 6); psi = T.GetDihedralDeg(c, 3, 4, 6, 8)
    key = (round(phi / 60), round(psi / 60))
    if key not in seen:
        seen.append(key); sel.append(cid); print(cid, round(phi), round(psi))
write_xyz(m, sel[:6], f"{out}/alanine_dipeptide_conformers.xyz", "alanine_dipeptide")
# PDB with standard residue/atom names (ACE-ALA-NME) from the first conformer
heavy = {0: ("ACE", "CH3", 1), 1: ("ACE", "C", 1), 2: ("ACE", "O", 1), 3: ("ALA", "N", 2), 4: ("ALA", "CA", 2),
         5: ("ALA", "CB", 2), 6: ("ALA", "C", 2), 7: ("ALA", "O", 2), 8: ("NME", "N", 3), 9: ("NME", "C", 3)}
hnames = {0: ["H1", "H2", "H3"], 3: ["H"], 4: ["HA"], 5: ["HB1", "HB2", "HB3"], 8: ["H"], 9: ["H1", "H2", "H3"]}
names = dict(heavy)
for hv, hl in hnames.items():
    hs = [n.GetIdx() for n in m.GetAtomWithIdx(hv).GetNeighbors() if n.GetSymbol() == "H"]
    assert len(hs) == len(hl)
    for h, nm in zip(hs, hl):
        names[h] = (heavy[hv][0], nm, heavy[hv][2])
conf = m.GetConformer(sel[0])
order = sorted(names, key=lambda k: (names[k][2], k if k < 10 else 100 + k))
# order: per residue, heavy atoms then their hydrogens
lines = []
for serial, k in enumerate(order, start=1):
    res, nm, rid = names[k]; p = conf.GetAtomPosition(k); el = m.GetAtomWithIdx(k).GetSymbol()
    nmf = f" {nm:<3}" if len(nm) < 4 else nm
    lines.append(f"ATOM  {serial:5d} {nmf} {res} A{rid:4d}    {p.x:8.3f}{p.y:8.3f}{p.z:8.3f}  1.00  0.00          {el:>2}")
open(f"{out}/alanine_dipeptide.pdb", "w").write("REMARK   capped alanine dipeptide ACE-ALA-NME, RDKit ETKDGv3 seed 42 + MMFF94\n" + "\n".join(lines) + "\nTER\nEND\n")
