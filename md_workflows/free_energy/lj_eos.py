"""Reference equations of state of the Lennard-Jones fluid: Johnson, Zollweg and Gubbins (1993),
and Kolafa-Nezbeda (1994) as a cross-check; the references of the LJ insertion checks
(``tests/md_workflows/free_energy``, ``benchmarks/lj_insertion.py``, ``benchmarks/lj_widom.py``).

Reference
    J. Karl Johnson, John A. Zollweg and Keith E. Gubbins, "The Lennard-Jones equation of state
    revisited", Molecular Physics 78 (3), 591-618 (1993), doi:10.1080/00268979300100411.

Form
    The modified Benedict-Webb-Rubin (MBWR) equation, Eqs. (5)-(7) of the paper, with the
    non-linear parameter ``gamma = 3``::

        P*       = rho* T* + sum_{i=1..8} a_i(T*) rho*^(i+1) + F sum_{i=1..6} b_i(T*) rho*^(2i+1)
        A_res/N  = sum_{i=1..8} a_i rho*^i / i + sum_{i=1..6} b_i G_i,        F = exp(-gamma rho*^2)

    with the temperature functions a_i (Table 5), b_i (Table 6) and the density functions
    G_i (Table 7: G_1 = (1 - F) / (2 gamma), G_i = -(F rho*^(2(i-1)) - 2(i-1) G_{i-1}) / (2 gamma)).

Coefficients
    x_1 .. x_32 are the fitted values of Table 10 of the paper. The digits used here were
    cross-checked against the same table as embedded in NIST's teqp
    (usnistgov/teqp, include/teqp/models/mie/lennardjones/johnson.hpp, class LJ126Johnson1993)
    and several independent public implementations, which all agree to every printed digit.

Units
    Reduced Lennard-Jones units throughout (epsilon = sigma = k_B = 1): ``rho`` is rho*, ``T``
    is T*, energies per particle are in epsilon, pressure in epsilon / sigma^3. The EOS describes
    the full (untruncated) Lennard-Jones fluid. It is a fit to simulation data for
    0.7 <= T* <= 6 (fluid states); outside that range it extrapolates without warning.

Checks (tests/md_workflows/free_energy/test_lj_fluid.py): mu_ex(T*=1.2, rho*=0.8) = -0.729 and
P* = 1.96 +/- 0.05 (Kolafa-Nezbeda 1994 gives P* = 1.96 at that point).

The Kolafa-Nezbeda (1994) equation of state is included below (``kn_*``) as an independent
cross-check: the two differ in mu_ex by 0.02-0.06 epsilon over the liquid and dense
supercritical states used here (e.g. -0.531 vs -0.560 at T* 2.0, rho* 0.5; -0.729 vs -0.750 at
T* 1.2, rho* 0.8), and simulation (Widom insertion, N = 256, rc = 3 + tail) sides with
Kolafa-Nezbeda at T* 2.0, rho* 0.5.
"""

from __future__ import annotations

import numpy as np

#: MBWR non-linear parameter gamma (JZG 1993).
GAMMA: float = 3.0

#: x_1 .. x_32 of Table 10 of Johnson, Zollweg & Gubbins (1993); ``X[i]`` is x_i (X[0] unused).
X: tuple = (
    0.0,
    0.8623085097507421, 2.976218765822098, -8.402230115796038, 0.1054136629203555,
    -0.8564583828174598, 1.582759470107601, 0.7639421948305453, 1.753173414312048,
    2.798291772190376e03, -4.8394220260857657e-02, 0.9963265197721935, -3.698000291272493e01,
    2.084012299434647e01, 8.305402124717285e01, -9.574799715203068e02, -1.477746229234994e02,
    6.398607852471505e01, 1.603993673294834e01, 6.805916615864377e01, -2.791293578795945e03,
    -6.245128304568454, -8.116836104958410e03, 1.488735559561229e01, -1.059346754655084e04,
    -1.131607632802822e02, -8.867771540418822e03, -3.986982844450543e01, -4.689270299917261e03,
    2.593535277438717e02, -2.694523589434903e03, -7.218487631550215e02, 1.721802063863269e02,
)


def _check(rho: float, temperature: float) -> None:
    if not np.isfinite(rho) or rho < 0.0:
        raise ValueError(f"density rho* must be finite and >= 0, got {rho}")
    if not np.isfinite(temperature) or temperature <= 0.0:
        raise ValueError(f"temperature T* must be finite and > 0, got {temperature}")


def a_coefficients(temperature: float) -> np.ndarray:
    """a_1 .. a_8 of Table 5 at ``temperature`` (T*); shape [8]."""
    t = float(temperature)
    x = X
    return np.array([
        x[1] * t + x[2] * np.sqrt(t) + x[3] + x[4] / t + x[5] / t**2,
        x[6] * t + x[7] + x[8] / t + x[9] / t**2,
        x[10] * t + x[11] + x[12] / t,
        x[13],
        x[14] / t + x[15] / t**2,
        x[16] / t,
        x[17] / t + x[18] / t**2,
        x[19] / t**2,
    ])


def b_coefficients(temperature: float) -> np.ndarray:
    """b_1 .. b_6 of Table 6 at ``temperature`` (T*); shape [6]."""
    t = float(temperature)
    x = X
    return np.array([
        x[20] / t**2 + x[21] / t**3,
        x[22] / t**2 + x[23] / t**4,
        x[24] / t**2 + x[25] / t**3,
        x[26] / t**2 + x[27] / t**4,
        x[28] / t**2 + x[29] / t**3,
        x[30] / t**2 + x[31] / t**3 + x[32] / t**4,
    ])


def g_functions(rho: float) -> np.ndarray:
    """G_1 .. G_6 of Table 7 at density ``rho`` (rho*); shape [6]."""
    f = np.exp(-GAMMA * rho**2)
    g = np.empty(6)
    g[0] = (1.0 - f) / (2.0 * GAMMA)
    for i in range(2, 7):
        g[i - 1] = -(f * rho ** (2 * (i - 1)) - 2.0 * (i - 1) * g[i - 2]) / (2.0 * GAMMA)
    return g


def pressure(rho: float, temperature: float) -> float:
    """Pressure P* (epsilon / sigma^3) of the full LJ fluid at rho*, T* (Eq. 5 of JZG 1993)."""
    _check(rho, temperature)
    a = a_coefficients(temperature)
    b = b_coefficients(temperature)
    f = np.exp(-GAMMA * rho**2)
    i_a = np.arange(1, 9)
    i_b = np.arange(1, 7)
    return float(rho * temperature + np.sum(a * rho ** (i_a + 1))
                 + f * np.sum(b * rho ** (2 * i_b + 1)))


def helmholtz_residual(rho: float, temperature: float) -> float:
    """Residual Helmholtz energy per particle A_res/N (epsilon) at rho*, T* (Eq. 7 of JZG 1993).

    Residual means relative to the ideal gas at the same density and temperature.
    """
    _check(rho, temperature)
    a = a_coefficients(temperature)
    b = b_coefficients(temperature)
    i_a = np.arange(1, 9)
    return float(np.sum(a * rho**i_a / i_a) + np.sum(b * g_functions(rho)))


def excess_chemical_potential(rho: float, temperature: float) -> float:
    """Excess chemical potential mu_ex (epsilon) at rho*, T*: A_res/N + P*/rho* - T*.

    At ``rho = 0`` the limit (0) is returned.
    """
    _check(rho, temperature)
    if rho == 0.0:
        return 0.0
    return helmholtz_residual(rho, temperature) + pressure(rho, temperature) / rho - temperature


# --- Kolafa & Nezbeda (1994), for cross-checks -------------------------------------------------
#
# J. Kolafa and I. Nezbeda, "The Lennard-Jones fluid: an accurate analytic and theoretically-based
# equation of state", Fluid Phase Equilibria 100, 1-34 (1994), doi:10.1016/0378-3812(94)80001-4:
# hard spheres of the temperature-dependent Barker-Henderson diameter d_hBH (Eq. 29), a
# second-virial correction Delta B2_hBH, and a polynomial in T*^(i/2) rho*^j (Eq. 30). The
# coefficients are those of the paper as embedded in NIST's teqp (usnistgov/teqp,
# include/teqp/models/mie/lennardjones/johnson.hpp, class LJ126KolafaNezbeda1994). It reproduces
# mu_ex = -0.750 and P* = 1.96 at T* 1.2, rho* 0.8 (shared/notes/free_energy_stack.md).

_KN_D = ((-2, 0.011117524), (-1, -0.076383859), (0, 1.080142248), (1, 0.000693129))
_KN_D_LN = -0.063920968
_KN_B2 = ((-7, -0.58544978), (-6, 0.43102052), (-5, 0.87361369), (-4, -4.13749995),
          (-3, 2.90616279), (-2, -7.02181962), (0, 0.02459877))
_KN_C = ((0, 2, 2.01546797), (0, 3, -28.17881636), (0, 4, 28.28313847), (0, 5, -10.42402873),
         (-1, 2, -19.58371655), (-1, 3, 75.62340289), (-1, 4, -120.70586598),
         (-1, 5, 93.92740328), (-1, 6, -27.37737354), (-2, 2, 29.34470520),
         (-2, 3, -112.3535693), (-2, 4, 170.64908980), (-2, 5, -123.06669187),
         (-2, 6, 34.42288969), (-4, 2, -13.37031968), (-4, 3, 65.38059570),
         (-4, 4, -115.09233113), (-4, 5, 88.91973082), (-4, 6, -25.62099890))
_KN_GAMMA = 1.92907278


def kn_helmholtz_residual(rho: float, temperature: float) -> float:
    """Kolafa-Nezbeda residual Helmholtz energy per particle A_res/N (epsilon) at rho*, T*."""
    _check(rho, temperature)
    t = float(temperature)
    d = _KN_D_LN * np.log(t) + sum(c * t ** (i / 2) for i, c in _KN_D)
    zeta = np.pi / 6.0 * rho * d**3
    a_hs = t * (5.0 / 3.0 * np.log(1.0 - zeta)
                + zeta * (34.0 - 33.0 * zeta + 4.0 * zeta**2) / (6.0 * (1.0 - zeta) ** 2))
    b2 = sum(c * t ** (i / 2) for i, c in _KN_B2)
    poly = sum(c * t ** (i / 2) * rho**j for i, j, c in _KN_C)
    return float(a_hs + np.exp(-_KN_GAMMA * rho**2) * rho * t * b2 + poly)


def kn_pressure(rho: float, temperature: float, step: float = 1e-6) -> float:
    """Kolafa-Nezbeda P* = rho*^2 d(A_res/N)/d rho* + rho* T* (central difference, ``step``)."""
    _check(rho, temperature)
    lo = max(rho - step, 0.0)
    dadrho = (kn_helmholtz_residual(rho + step, temperature)
              - kn_helmholtz_residual(lo, temperature)) / (rho + step - lo)
    return float(rho**2 * dadrho + rho * temperature)


def kn_excess_chemical_potential(rho: float, temperature: float) -> float:
    """Kolafa-Nezbeda mu_ex (epsilon) at rho*, T*: A_res/N + P*/rho* - T* (0 at rho* = 0)."""
    _check(rho, temperature)
    if rho == 0.0:
        return 0.0
    return kn_helmholtz_residual(rho, temperature) + kn_pressure(rho, temperature) / rho - temperature
