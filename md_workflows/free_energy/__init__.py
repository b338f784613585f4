"""Free-energy workflows: ligand parameters (GAFF/GAFF2 + AM1-BCC), solvation and binding free energies."""
