"""Choices of the OPC UA transport configuration."""

from django.db import models


class NodeRole(models.TextChoices):
    """What a mapped node is to Celltrace.

    A result is built per station and ``group`` (one cycler channel, or blank for a station
    that handles one unit at a time) when its trigger fires: a ``result_ready_event`` (the
    values travel in the event's fields) or, for servers without events, a change of the
    ``result`` node (the values are the latest data changes of the group's nodes).
    """

    SERIAL = "serial", "Unit serial (PartId)"
    MEASUREMENT = "measurement", "Measurement of a characteristic"
    RESULT = "result", "Result OK / NOK (data-change trigger)"
    STATE = "state", "Station state"
    RESULT_READY_EVENT = "result_ready_event", "ResultReady event notifier (event trigger)"
    STOP_METHOD = "stop_method", "Stop(Reason) method: line stop and hold commands"
    RESUME_METHOD = "resume_method", "Resume() method: release commands"


#: Roles whose node is read for a value (data-change subscriptions).
VALUE_ROLES = (NodeRole.SERIAL, NodeRole.MEASUREMENT, NodeRole.RESULT, NodeRole.STATE)
#: Roles that trigger a result.
TRIGGER_ROLES = (NodeRole.RESULT_READY_EVENT, NodeRole.RESULT)
#: Roles called by the command sender.
METHOD_ROLES = (NodeRole.STOP_METHOD, NodeRole.RESUME_METHOD)


class UnitKind(models.TextChoices):
    """``unit_kind`` of a process_result (the envelope schema's list): the unit is created on
    its first station visit when it is not known yet."""

    MATERIAL_LOT = "material_lot", "Material lot"
    MIX_BATCH = "mix_batch", "Mix batch"
    COIL = "coil", "Electrode coil"
    SLIT_COIL = "slit_coil", "Slit coil"
    CELL = "cell", "Cell"
    MODULE = "module", "Module"
    PACK = "pack", "Pack"
    VEHICLE = "vehicle", "Vehicle"
