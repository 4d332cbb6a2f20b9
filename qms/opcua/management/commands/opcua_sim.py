"""Run the OPC UA station simulator: an electrolyte fill station and a formation cycler
rack of the demo's 21700 line, producing cells at a chosen rate.

    python manage.py opcua_sim                          # opc.tcp://127.0.0.1:4840, 1 cell/s
    python manage.py opcua_sim --rate 5 --units 100     # 100 cells, then idle
    python manage.py opcua_sim --configure              # also map it for ingest_opcua
    python manage.py opcua_sim --out-of-spec-every 50   # every 50th fill below the LSL

Limits, machine identification and the serial prefix come from the plant's master data
when the line is seeded (``seed_demo``), otherwise from the built-in 21700 defaults. The
node layout is documented in docs/ingest.md, "OPC UA". SIGTERM or SIGINT stops it.
"""

import asyncio
import contextlib
import re
import signal
from dataclasses import replace

from django.core.management.base import BaseCommand, CommandError

from qms.ingest.services import transport_actor
from qms.models import Characteristic, Equipment, Line, Station
from qms.opcua.services import SimStation, opcua_sim_configure
from qms.opcua.simulator import FillProfile, RackProfile, SimConfig, StationSimulator


def serial_prefix(line: Line | None, default: str) -> str:
    """The cell prefix of a line's serial scheme (``C2[0-9]{10}|...`` -> ``C2``)."""
    if line is None:
        return default
    match = re.match(r"([A-Z0-9]+)\[0-9\]\{10\}", line.serial_scheme)
    return match.group(1) if match else default


class Command(BaseCommand):
    help = "Run the OPC UA station simulator (fill station and formation rack)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=4840)
        parser.add_argument("--site", default="GF1")
        parser.add_argument("--line", default="L2-CYL")
        parser.add_argument("--fill-station", default="fill")
        parser.add_argument("--fill-characteristic", default="fill-mass")
        parser.add_argument("--form-station", default="form")
        parser.add_argument("--form-characteristic", default="formation-charge-capacity")
        parser.add_argument("--rate", type=float, default=1.0, help="Cells per second (1).")
        parser.add_argument("--units", type=int, default=None, help="Cells to make, then idle.")
        parser.add_argument("--no-fill", action="store_true", help="Only the formation rack.")
        parser.add_argument("--no-rack", action="store_true", help="Only the fill station.")
        parser.add_argument("--channels", type=int, default=8, help="Rack channels (8).")
        parser.add_argument(
            "--step-s", type=float, default=1.0, help="Seconds per formation step (1.0)."
        )
        parser.add_argument("--serial-prefix", default="", help="Default: the line's scheme.")
        parser.add_argument("--first-serial", type=int, default=None)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--out-of-spec-every", type=int, default=0, help="Every n-th fill below the LSL."
        )
        parser.add_argument(
            "--configure",
            action="store_true",
            help="Write the OPC UA server and node maps for this simulator (and send the "
            "stations' commands over OPC UA).",
        )
        parser.add_argument("--name", default="opcua-sim", help="Server name when configuring.")
        parser.add_argument(
            "--exit-when-done", action="store_true", help="Exit once --units are through."
        )

    def _station(self, options, code: str) -> Station | None:
        return (
            Station.objects.select_related("line__site")
            .filter(
                line__site__code__iexact=options["site"],
                line__code__iexact=options["line"],
                code__iexact=code,
            )
            .first()
        )

    def handle(self, *args, **options):
        fill_station = self._station(options, options["fill_station"])
        form_station = self._station(options, options["form_station"])
        fill_char = self._char(fill_station, options["fill_characteristic"])
        form_char = self._char(form_station, options["form_characteristic"])
        line = (fill_station or form_station).line if (fill_station or form_station) else None

        fill = None if options["no_fill"] else FillProfile()
        if fill is not None and fill_char is not None:
            fill = replace(
                fill,
                fill_nominal_g=fill_char.nominal,
                fill_lsl_g=fill_char.lsl,
                fill_usl_g=fill_char.usl,
            )
        if fill is not None:
            fill = replace(fill, out_of_spec_every=options["out_of_spec_every"])
            fill = self._identify(fill, fill_station, "filler-1", "fill")
        rack = None
        if not options["no_rack"]:
            rack = RackProfile(channels=options["channels"], step_s=options["step_s"])
            if form_char is not None:
                rack = replace(
                    rack,
                    capacity_nominal_ah=form_char.nominal,
                    capacity_lsl_ah=form_char.lsl,
                    capacity_usl_ah=form_char.usl,
                )
            rack = self._identify(rack, form_station, "fc-01", "form")
        if fill is None and rack is None:
            raise CommandError("Nothing to simulate (--no-fill and --no-rack).")
        config = SimConfig(
            host=options["host"],
            port=options["port"],
            fill=fill,
            rack=rack,
            rate_per_s=options["rate"],
            units=options["units"],
            serial_prefix=options["serial_prefix"] or serial_prefix(line, "C2"),
            first_serial=options["first_serial"],
            seed=options["seed"],
        )
        if options["configure"]:
            self._configure(options, config, fill_station, fill_char, form_station, form_char)
        self.stdout.write(f"OPC UA station simulator at {config.endpoint}")
        asyncio.run(self._run(config, options["exit_when_done"]))

    def _char(self, station: Station | None, code: str) -> Characteristic | None:
        if station is None:
            return None
        return Characteristic.objects.filter(station=station, code=code).first()

    def _identify(self, profile, station: Station | None, equipment_code: str, what: str):
        """Identification from the plant's equipment record, when there is one."""
        if station is None:
            return profile
        equipment = Equipment.objects.filter(station=station, code=equipment_code).first()
        if equipment is None:
            return profile
        asset = f"{station.line.site.code}/{station.line.code}/{station.code}/{equipment.code}"
        return replace(
            profile,
            manufacturer=equipment.manufacturer or profile.manufacturer,
            model=equipment.model_name or profile.model,
            serial_number=equipment.serial_number or profile.serial_number,
            asset_id=asset,
        )

    def _configure(self, options, config, fill_station, fill_char, form_station, form_char):
        actor = transport_actor("opcua")
        fill = form = None
        if config.fill is not None:
            if fill_station is None or fill_char is None:
                raise CommandError(
                    f"--configure: no station {options['fill_station']} with characteristic "
                    f"{options['fill_characteristic']} on {options['site']}/{options['line']} "
                    "(run seed_demo first)."
                )
            fill = SimStation(
                fill_station,
                fill_char,
                config.fill.machine,
                Equipment.objects.filter(station=fill_station, code="filler-1").first(),
            )
        if config.rack is not None and form_station is not None and form_char is not None:
            form = SimStation(
                form_station,
                form_char,
                config.rack.machine,
                Equipment.objects.filter(station=form_station, code="fc-01").first(),
            )
        server = opcua_sim_configure(
            name=options["name"],
            endpoint_url=config.endpoint,
            actor=actor,
            fill=fill,
            formation=form,
        )
        self.stdout.write(
            f"configured OPC UA server {server.name} ({server.node_maps.count()} node maps)"
        )

    async def _run(self, config: SimConfig, exit_when_done: bool) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sim = StationSimulator(config)
        await sim.start()
        try:
            await sim.run(stop)
            if not stop.is_set():
                self.stdout.write(f"done: {len(sim.results)} results")
                if not exit_when_done:
                    await stop.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=2.0)
        finally:
            await sim.stop()
