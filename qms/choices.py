"""Choices for plant topology and the control plan."""

from django.db import models


class CellFormat(models.TextChoices):
    POUCH = "pouch", "Pouch"
    PRISMATIC = "prismatic", "Prismatic"
    CYLINDRICAL = "cylindrical", "Cylindrical"


class IdentificationMethod(models.TextChoices):
    DATAMATRIX = "datamatrix", "DataMatrix (GS1 element string)"
    BARCODE_1D = "barcode_1d", "1D barcode"
    RFID = "rfid", "RFID"
    LASER_MARK = "laser_mark", "Laser mark"


class ProcessStep(models.TextChoices):
    MIXING = "mixing", "Mixing"
    COATING = "coating", "Coating"
    CALENDERING = "calendering", "Calendering"
    SLITTING = "slitting", "Slitting"
    WINDING_STACKING = "winding_stacking", "Winding or stacking"
    TAB_WELDING = "tab_welding", "Tab welding"
    CELL_ASSEMBLY = "cell_assembly", "Cell assembly"
    ELECTROLYTE_FILL = "electrolyte_fill", "Electrolyte fill"
    SEALING = "sealing", "Sealing"
    FORMATION = "formation", "Formation"
    DEGASSING = "degassing", "Degassing"
    AGING = "aging", "Aging"
    GRADING = "grading", "Grading"
    MODULE_ASSEMBLY = "module_assembly", "Module assembly"
    PACK_ASSEMBLY = "pack_assembly", "Pack assembly"
    END_OF_LINE_TEST = "end_of_line_test", "End-of-line test"
    VEHICLE_MARRIAGE = "vehicle_marriage", "Vehicle marriage"


class SpecialCharacteristic(models.TextChoices):
    """IATF 16949 special-characteristic classes."""

    CC = "cc", "CC (critical: safety or regulatory)"
    SC = "sc", "SC (significant: fit, function, performance)"
    NONE = "none", "Standard"


class IntegrationScope(models.TextChoices):
    READ = "read", "Read only"
    READ_WRITE = "read_write", "Read and write"


class CommandTransport(models.TextChoices):
    """How commands (line stop, hold) reach a station."""

    MQTT = "mqtt", "MQTT command topic qms/<site>/<line>/<station>/command"
    OPCUA = "opcua", "OPC UA method on the station's server"
    NONE = "none", "None (the station polls the interlock)"
