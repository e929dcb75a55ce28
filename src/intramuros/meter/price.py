"""What a call cost, in euros and in grams of CO2e, from its energy and its share of the machine.

    cost_eur  = machine_seconds / 3600 x hardware EUR per hour  +  kWh x electricity EUR/kWh
    co2e_g    = kWh x grid gCO2e/kWh

Hardware per hour = purchase price / (lifetime hours x utilisation): a machine
busy half of its life costs twice as much per busy hour. ``machine_seconds`` is
the call's share of wall time while it ran (shared with calls running beside
it, see :mod:`intramuros.meter.energy`).

Defaults (set your own in the settings; each is documented there and in the README):

- 3,000 EUR machine, 4 years, 50 % utilisation (a small single-socket server).
- 0.20 EUR/kWh electricity (the order of EU non-household prices, 2024).
- Grid intensity presets: ``eu`` = 264 gCO2/kWh (EU-27, 2021), ``fr`` = 60 gCO2/kWh
  (France, 2021); both from SDES "Key figures on climate 2023", based on IEA data.
  Any number may be given instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from intramuros.settings import GRID_PRESETS, Settings, grid_intensity

__all__ = ["GRID_PRESETS", "HOURS_PER_YEAR", "PriceModel", "grid_intensity"]

HOURS_PER_YEAR = 8766.0  # 365.25 days


@dataclass(frozen=True)
class PriceModel:
    """Prices and intensities that turn energy and machine time into euros and CO2e."""

    hardware_eur: float = 3000.0
    lifetime_years: float = 4.0
    utilisation: float = 0.5
    electricity_eur_per_kwh: float = 0.20
    grid_gco2e_per_kwh: float = GRID_PRESETS["eu"]

    @property
    def hardware_eur_per_hour(self) -> float:
        """Amortised hardware cost of one busy hour."""
        return self.hardware_eur / (self.lifetime_years * HOURS_PER_YEAR * self.utilisation)

    def cost_eur(self, joules: float, machine_seconds: float) -> float:
        """Euros for a call that used ``joules`` and ``machine_seconds`` of the machine."""
        kwh = joules / 3.6e6
        return machine_seconds / 3600.0 * self.hardware_eur_per_hour + (
            kwh * self.electricity_eur_per_kwh
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceModel:
        """The price model of the hardware, electricity and grid settings."""
        return cls(
            hardware_eur=settings.hardware_price_eur,
            lifetime_years=settings.hardware_lifetime_years,
            utilisation=settings.hardware_utilisation,
            electricity_eur_per_kwh=settings.electricity_eur_per_kwh,
            grid_gco2e_per_kwh=grid_intensity(settings.grid_intensity),
        )

    def co2e_grams(self, joules: float) -> float:
        """Grams of CO2e of ``joules`` drawn from the configured grid."""
        return joules / 3.6e6 * self.grid_gco2e_per_kwh
