"""Relative binding free energies by the alchemical transfer method (ATM, OpenMM's ATMForce).

- :mod:`.schedule`: the ATM states (two legs meeting at lambda = 1/2) and the softplus
  alchemical potential in numpy, so that every sample's reduced energy at every state comes
  from its stored (u0, u1).
- :mod:`.atm_system`: an OpenMM System with two ligands -> the same with its nonbonded forces
  inside an ATMForce that displaces the ligands; ML forces on the ligands stay outside.
- :mod:`.restraints`: the centroid and alignment restraints of relative ATM.
- :mod:`.ml_ligands`: ML ligands (mechanical embedding), outside the ATMForce.
- :mod:`.complex`: receptor + both ligands (GAFF2/AM1-BCC each) in one TIP3P box.
- :mod:`.leg`: an ATM run on the engine's resumable sampler. :mod:`.analysis`: ddG with
  both legs and every estimator.
- ``mlff fe rbfe``: :mod:`.config` (the YAML's keys), :mod:`.placement` (a SMILES guest in a
  host's cavity, alignment reference atoms), :mod:`.edge` (one edge end to end),
  :mod:`.ml_uncertainty` (each ensemble member's ddG by reweighting), :mod:`.network` (cycle
  closures, per-ligand values), :mod:`.run` (the network, its table and plot).
"""
