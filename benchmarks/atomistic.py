"""Atomistic reference vs coupled solves, and the cost of one force evaluation vs ASE.

    python benchmarks/atomistic.py [--half-width 30] [--radius 6] [--repeat 5]

Setup: the vacancy in a triangular Lennard-Jones crystal under uniform strain
(msfem.atomistic.problems.vacancy), box |X_k| <= half_width * a. Printed, all measured in
this run (median of --repeat where repeated; nothing is asserted):

* the full atomistic relaxation: unknowns, Newton iterations, wall time;
* each coupled method at atomistic radius R: unknowns, build time (mesh, interpolation,
  bond weights), solve time, relative l2 error against the reference, and the ratios of
  unknowns and of time to the reference;
* one energy + force evaluation per atom with msfem's bond-list kernels and with ASE's
  ``LennardJones(smooth=True)`` calculator on the same atoms (ASE rebuilds its neighbour
  list on every call; the msfem time is shown with and without building the bond list).
"""

import argparse
import time

import msfem  # noqa: F401  (imports dolfinx_solver first)
import numpy as np

from msfem.atomistic import METHODS, errors, neighbour_bonds, vacancy

parser = argparse.ArgumentParser()
parser.add_argument("--half-width", type=float, default=30.0)
parser.add_argument("--radius", type=float, default=6.0)
parser.add_argument("--repeat", type=int, default=5)
args = parser.parse_args()


def median_time(fn, repeat=args.repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


p = vacancy(args.half_width)
t = time.perf_counter()
ref, rel = p.reference()
t_ref = time.perf_counter() - t
n_ref = int((~p.fixed).sum() * 2)
print(f"vacancy in a triangular LJ crystal: {len(p.X)} atoms, F = {p.F.tolist()}")
print(f"atomistic reference: {n_ref} unknowns, {rel.iterations} Newton iterations, "
      f"{t_ref:.3f} s")
print(f"\ncoupled, atomistic radius R = {args.radius:g} a, coarse sub-lattice 3a:")
print(f"{'method':>8} {'unknowns':>9} {'build [s]':>10} {'solve [s]':>10} {'l2_rel':>9} "
      f"{'unknowns/ref':>13} {'time/ref':>9}")
for m in METHODS:
    t = time.perf_counter()
    scheme = p.coupled(m, args.radius)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    sol = scheme.solve(p.F)
    t_solve = time.perf_counter() - t
    e = errors(p, sol.x)["l2_rel"]
    print(f"{m:>8} {sol.dofs:>9d} {t_build:>10.3f} {t_solve:>10.3f} {e:>9.2e} "
          f"{sol.dofs / n_ref:>13.3f} {(t_build + t_solve) / t_ref:>9.3f}")

x = ref
model = p.model
t_msfem = median_time(lambda: (model.energy(x), model.forces(x)))
t_list = median_time(lambda: neighbour_bonds(x, model.potential.cutoff))
print(f"\none energy + force evaluation, {len(x)} atoms:")
print(f"  msfem bond list : {1e6 * t_msfem / len(x):8.3f} us per atom "
      f"(+ {1e6 * t_list / len(x):.3f} us per atom to build the cKDTree bond list)")
try:
    import ase
    from ase.calculators.lj import LennardJones as AseLJ
except ImportError:
    print("  ASE             : not installed (pip install ase)")
else:
    pot = model.potential
    atoms = ase.Atoms(f"Ar{len(x)}", positions=np.c_[x, np.zeros(len(x))], pbc=False)
    atoms.calc = AseLJ(epsilon=pot.epsilon, sigma=pot.sigma, rc=pot.cutoff, ro=pot.switch_on,
                       smooth=True)
    shift = [0.0]

    def ase_eval():
        shift[0] += 1e-9                       # new positions: no cached result
        atoms.positions[:, 0] = x[:, 0] + shift[0]
        atoms.get_potential_energy()
        atoms.get_forces()

    t_ase = median_time(ase_eval)
    print(f"  ASE LennardJones: {1e6 * t_ase / len(x):8.3f} us per atom")
    print(f"  ratio ASE / msfem: {t_ase / t_msfem:.1f} "
          f"(with the bond list rebuilt: {t_ase / (t_msfem + t_list):.1f})")
