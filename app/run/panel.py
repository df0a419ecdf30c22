"""The run panel: a form that builds the engine's RunSpec and SearchConfig.

Search options are generated from the engine's ``SearchConfig`` dataclass, so the form offers
exactly the options of ``python -m engine search`` (labels and hints from ``search_options``,
a generic widget for any new field). Choosing a preset loads its values; edits then override it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from engine.models import BUILTIN_MODELS, DEMO_MODEL
from engine.pipeline import RunSpec
from engine.quant import QuantConfig, available_quantizers
from engine.search import config as search_config

from app.run.search_options import COMPILE_OPTION, HIDDEN_FIELDS, OPTIONS, Option, base_type, choices, field_types
from app.widgets.bit_plan_row import BitPlanRow

BUILTIN_LABELS = {name: f"{name}  (built-in {model.note})" for name, model in BUILTIN_MODELS.items()}
SUGGESTED_MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224",
                    "swin_tiny_patch4_window7_224")
DEFAULT_QUANTIZER, DEFAULT_W_BITS, DEFAULT_A_BITS = "omse", 4, 3   # the demo's hard setting (README)
MIN_COMBO_CHARS = 14


class _Field:
    """One SearchConfig field's widget, with get/set."""

    def __init__(self, name: str, kind: type, optional: bool, option: Option, value: Any) -> None:
        self.name, self.kind, self.optional = name, kind, optional
        if kind is bool:
            self.widget = QCheckBox()
        elif option.choices or kind is str:
            self.widget = QComboBox()
            self.widget.addItems(list(option.choices) or choices(name, value))
        elif kind is int and not optional:
            self.widget = QSpinBox()
            self.widget.setRange(int(option.minimum), int(min(option.maximum, 2**31 - 1)))
        elif kind is float and not optional:
            self.widget = QDoubleSpinBox()
            self.widget.setDecimals(option.decimals)
            self.widget.setRange(option.minimum, option.maximum)
        else:
            self.widget = QLineEdit()
            self.widget.setPlaceholderText(option.empty)
        self.widget.setObjectName(f"search_{name}")
        self.widget.setToolTip(option.hint)
        self.set(value)

    def on_change(self, slot) -> None:
        w = self.widget
        signal = (w.toggled if isinstance(w, QCheckBox) else w.currentTextChanged if isinstance(w, QComboBox)
                  else w.valueChanged if isinstance(w, (QSpinBox, QDoubleSpinBox)) else w.textChanged)
        signal.connect(lambda *_: slot())

    def raw(self) -> Any:
        """The value, or the text typed when it is not one yet (what decides which rows show)."""
        try:
            return self.get()
        except ValueError:
            return self.widget.text()

    def set(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QComboBox):
            text = "" if value is None else str(value)
            if w.findText(text) < 0:
                w.addItem(text)
            w.setCurrentText(text)
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(value if value is not None else w.minimum())
        else:
            w.setText("" if value is None else f"{value:g}" if isinstance(value, float) else str(value))

    def get(self) -> Any:
        w = self.widget
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QComboBox):
            return w.currentText() or (None if self.optional else "")
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.value()
        text = w.text().strip()
        if not text:
            if self.optional:
                return None
            raise ValueError(f"{OPTIONS.get(self.name, Option(self.name, '')).label} needs a value")
        try:
            return self.kind(text)
        except ValueError:
            raise ValueError(f"{OPTIONS.get(self.name, Option(self.name, '')).label}: {text!r} is not a number") from None


def available_devices() -> list[tuple[str, str | None]]:
    """(label, value) pairs: auto, cpu and each CUDA device torch can see."""
    import torch
    cuda = torch.cuda.is_available()
    auto = "auto  (CUDA GPU)" if cuda else "auto  (no CUDA GPU found: CPU)"
    devices: list[tuple[str, str | None]] = [(auto, None), ("cpu", "cpu")]
    if cuda:
        for i in range(torch.cuda.device_count()):
            devices.append((f"cuda:{i}  {torch.cuda.get_device_name(i)}", f"cuda:{i}"))
    return devices


class RunPanel(QScrollArea):
    """Model, data, quantization, search and device settings; ``spec()`` / ``search_config()`` read them."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runPanel")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        body.setObjectName("runPanelBody")
        layout = QVBoxLayout(body)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self._model_group())
        layout.addWidget(self._quant_group())
        layout.addWidget(self._search_group())
        layout.addStretch(1)
        for combo in body.findChildren(QComboBox):    # long entries (a GPU's name) must not widen the window
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(MIN_COMBO_CHARS)
        self.setWidget(body)
        self.setMinimumWidth(body.sizeHint().width() + 24)
        self._shown_spec: RunSpec | None = None   # the run whose settings were shown last (set_values)

    # ---------------------------------------------------------------- groups

    def _model_group(self) -> QGroupBox:
        box = QGroupBox("Model and data")
        form = _form(box, "The quantized Vision Transformer to refine, and the images it sees.")
        self.model = QComboBox(objectName="model")
        self.model.setEditable(True)
        self.model.addItems([*BUILTIN_LABELS.values(), *SUGGESTED_MODELS])
        self.model.setToolTip("A timm model name, or a built-in model trained on the digits (works offline).")
        form.addRow(_label("Model", self.model), self.model)
        self.weights = QLineEdit(objectName="weights")
        self.weights.setPlaceholderText("built-in or random")
        self.weights.setToolTip("Optional local weights file (.safetensors or .pth state dict) for the model.")
        form.addRow(_label("Weights", self.weights), _with_browse(self.weights, self._browse_weights))
        self.pretrained = QCheckBox("timm's pretrained weights (online)", objectName="pretrained")
        self.pretrained.setToolTip("Use timm's own pretrained weights; needs a network connection the first time.")
        form.addRow("", self.pretrained)
        self.data = QLineEdit(objectName="data")
        self.data.setPlaceholderText("built-in digits")
        self.data.setToolTip("An ImageNet-style folder: train/<class>/* (calibration, held-out) and val/<class>/* (test).")
        form.addRow(_label("Data folder", self.data), _with_browse(self.data, self._browse_data))
        self.calib_size = _spin(1, 1_000_000, 1000, "calib_size",
                                "Calibration images (drawn from train, seeded). The search's fitness is measured on them.")
        form.addRow(_label("Calibration images", self.calib_size), self.calib_size)
        self.batch_size = _spin(1, 100_000, 100, "batch_size", "Images per forward pass. Lower it if memory runs out.")
        form.addRow(_label("Batch size", self.batch_size), self.batch_size)
        self.device = QComboBox(objectName="device")
        for label, value in available_devices():
            self.device.addItem(label, value)
        self.device.setToolTip("Where the model runs. auto = the CUDA GPU when there is one, else the CPU.")
        form.addRow(_label("Device", self.device), self.device)
        return box

    def _quant_group(self) -> QGroupBox:
        box = QGroupBox("Quantization (the starting point)")
        form = _form(box, "How the model is quantized before the search. Fewer bits = larger accuracy loss.")
        self.quantizer = QComboBox(objectName="quantizer")
        self.quantizer.addItems(available_quantizers())
        if self.quantizer.findText(DEFAULT_QUANTIZER) >= 0:
            self.quantizer.setCurrentText(DEFAULT_QUANTIZER)
        self.quantizer.setToolTip("The post-training quantizer that sets the initial scales (the 'base' model).")
        form.addRow(_label("Quantizer", self.quantizer), self.quantizer)
        self.w_bits = _spin(1, 16, DEFAULT_W_BITS, "w_bits", "Bits of every weight (Linear layers, patch embedding).")
        self.a_bits = _spin(2, 16, DEFAULT_A_BITS, "a_bits", "Bits of every activation (inputs of the Linear layers).")
        self.attn_bits = _spin(1, 16, 1, "attn_bits", "Bits of q, k, v and the attention probabilities.")
        self.attn_bits.setSpecialValueText("same as A")
        self.attn_bits.setMinimum(1)
        self.attn_bits.setValue(1)
        row = QHBoxLayout()
        for text, spin in (("W", self.w_bits), ("A", self.a_bits)):
            row.addWidget(QLabel(text))
            row.addWidget(spin)
        form.addRow(_label("Bits", self.w_bits), row)
        form.addRow(_label("Attention bits", self.attn_bits), self.attn_bits)
        self.bit_plan = BitPlanRow()
        self.bit_plan.opened.connect(self._plan_opened)
        form.addRow(_label("Bit plan", self.bit_plan.text), self.bit_plan)
        return box

    def _plan_opened(self, plan: Any) -> None:
        """A plan file names its quantizer and the base widths its points are counted from."""
        self.quantizer.setCurrentText(plan.quantizer)
        self.w_bits.setValue(plan.w_bits)
        self.a_bits.setValue(plan.a_bits)
        self.attn_bits.setValue(plan.attn_bits or self.attn_bits.minimum())

    def _search_group(self) -> QGroupBox:
        box = QGroupBox("CPT-V search")
        form = _form(box, "The search nudges the quantization scales (all blocks together, then block by "
                          "block) so the quantized model's outputs get closer to the full-precision model's.")
        self.preset = QComboBox(objectName="preset")
        for name, label in search_config.PRESET_LABELS.items():
            self.preset.addItem(label, name)
        self.preset.setToolTip("Guided (recommended): a joint phase moves every block's scales together along the "
                               "gradient, then block by block the gradient proposes each move, kept only if it lowers "
                               "the loss. CPT-V paper: the paper's contrastive evolutionary search, its "
                               "release's exact recipe. Null baseline: the guided search's moves along random "
                               "directions, with the same acceptance and budget (what the gradient adds).")
        form.addRow(_label("Preset", self.preset), self.preset)
        self.seed = _spin(0, 2**31 - 1, 0, "seed", "One seed drives calibration sampling and the search: same seed, same result.")
        form.addRow(_label("Seed", self.seed), self.seed)
        self.fields: dict[str, _Field] = {}
        self._rows: dict[str, tuple[QFormLayout, Any]] = {}   # field -> (its form, when the search uses it)
        defaults = search_config.PRESETS[self.preset.currentData()]
        hints = field_types()
        advanced = QWidget()
        advanced_form = QFormLayout(advanced)
        advanced_form.setContentsMargins(0, 0, 0, 0)
        for f in dataclasses.fields(search_config.SearchConfig):
            if f.name in HIDDEN_FIELDS or not f.init:
                continue
            option = OPTIONS.get(f.name, Option(f.name.replace("_", " ").capitalize(), f"Search option {f.name}.",
                                                advanced=True))
            kind, optional = base_type(hints.get(f.name, f.type), getattr(defaults, f.name))
            if kind not in (bool, int, float, str):
                continue
            field = _Field(f.name, kind, optional, option, getattr(defaults, f.name))
            self.fields[f.name] = field
            self._rows[f.name] = (advanced_form if option.advanced else form, f.metadata.get("used"))
            self._rows[f.name][0].addRow(_label(option.label, field.widget), field.widget)
            field.on_change(self._show_used_rows)
        self.compile = _Field("compile", str, False, COMPILE_OPTION, RunSpec().compile)
        advanced_form.addRow(_label(COMPILE_OPTION.label, self.compile.widget), self.compile.widget)
        self.more = QToolButton(objectName="moreOptions", text="More search options", checkable=True)
        self.more.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more.setArrowType(Qt.ArrowType.RightArrow)
        self.more.toggled.connect(lambda on: (advanced.setVisible(on), self.more.setArrowType(
            Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)))
        advanced.setVisible(False)
        form.addRow(self.more)
        form.addRow(advanced)
        self.preset.currentIndexChanged.connect(lambda _: self.apply_preset(self.preset.currentData()))
        self._show_used_rows()
        return box

    def _show_used_rows(self) -> None:
        """Only the options the chosen strategy uses (each field's ``used`` predicate, the engine's own rule
        of what makes two searches differ): no population for guided, no direction for evolution."""
        values = {name: field.raw() for name, field in self.fields.items()}
        for name, (form, used) in self._rows.items():
            form.setRowVisible(self.fields[name].widget, used is None or bool(used(values)))

    def shown_options(self) -> set[str]:
        """The search options the panel offers for the chosen strategy (advanced ones too, collapsed or not)."""
        return {name for name, (form, _used) in self._rows.items() if form.isRowVisible(self.fields[name].widget)}

    # ---------------------------------------------------------------- values

    def apply_preset(self, name: str) -> None:
        preset = search_config.PRESETS[name]
        for field in self.fields.values():
            field.set(getattr(preset, field.name))
        self.changed.emit()

    def select_preset(self, name: str, load: bool = True) -> None:
        """Show preset ``name`` (an alias too: ``release`` is *CPT-V paper*); ``load`` its values."""
        index = self.preset.findData(search_config.PRESETS[name].preset)
        self.preset.blockSignals(not load)
        self.preset.setCurrentIndex(index)
        self.preset.blockSignals(False)

    def model_name(self) -> str:
        text = self.model.currentText().strip()
        return text.split()[0] if text else DEMO_MODEL

    def spec(self) -> RunSpec:
        attn = self.attn_bits.value()
        self.bit_plan.check_model(self.model_name())
        quant = QuantConfig(self.quantizer.currentText(), self.w_bits.value(), self.a_bits.value(),
                            None if attn == self.attn_bits.minimum() else attn, plan=self.bit_plan.points)
        spec = RunSpec(model=self.model_name(), weights=self.weights.text().strip() or None,
                       pretrained=self.pretrained.isChecked(), data=self.data.text().strip() or None,
                       quant=quant, calib_size=self.calib_size.value(), batch_size=self.batch_size.value(),
                       seed=self.seed.value(), device=self.device.currentData(), compile=self.compile.get())
        shown = self._shown_spec
        if shown is not None and (shown.model, shown.data) == (spec.model, spec.data):
            # what the form has no row for stays as the shown run had it, so Start reruns that run
            spec = dataclasses.replace(spec, heldout_from=shown.heldout_from,
                                       quant=dataclasses.replace(quant, allow_float=shown.quant.allow_float))
        return spec

    def search_config(self) -> Any:
        values = {name: field.get() for name, field in self.fields.items()}
        names = {f.name for f in dataclasses.fields(search_config.SearchConfig)}
        if "seed" in names:
            values["seed"] = self.seed.value()
        base = search_config.PRESETS[self.preset.currentData()]
        return dataclasses.replace(base, **values)

    def set_values(self, spec: RunSpec | None = None, config: Any = None) -> None:
        """Show the settings of a run (opened or resumed), so Start reruns it. The compile mode stays as
        chosen: a run file does not record it (it changes how fast a run computes, not what)."""
        if spec is not None:
            self._shown_spec = spec
            self.model.setCurrentText(BUILTIN_LABELS.get(spec.model, spec.model))
            self.weights.setText(spec.weights or "")
            self.pretrained.setChecked(bool(spec.pretrained))
            self.data.setText(spec.data or "")
            self.calib_size.setValue(spec.calib_size)
            self.batch_size.setValue(spec.batch_size)
            self.seed.setValue(spec.seed)
            self.quantizer.setCurrentText(spec.quant.quantizer)
            self.w_bits.setValue(spec.quant.w_bits)
            self.a_bits.setValue(spec.quant.a_bits)
            self.attn_bits.setValue(spec.quant.attn_bits or self.attn_bits.minimum())
            self.bit_plan.set_plan(spec.quant.plan, spec.model, "the run shown")
            index = self.device.findData(spec.device)
            if index >= 0:
                self.device.setCurrentIndex(index)
        if config is not None:
            preset = getattr(config, "preset", None)
            if preset in search_config.PRESETS:
                self.select_preset(preset, load=False)
            for field in self.fields.values():
                field.set(getattr(config, field.name))

    def set_editable(self, on: bool) -> None:
        self.widget().setEnabled(on)

    # ---------------------------------------------------------------- browse

    def _browse_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model weights", "", "Weights (*.safetensors *.pth *.pt);;All files (*)")
        if path:
            self.weights.setText(path)

    def _browse_data(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "ImageNet-style data folder (train/, val/)")
        if path:
            self.data.setText(path)


def _form(box: QGroupBox, hint: str) -> QFormLayout:
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    note = QLabel(hint)
    note.setWordWrap(True)
    note.setObjectName("hint")
    form.addRow(note)
    return form


def _label(text: str, buddy: QWidget) -> QLabel:
    label = QLabel(text)
    label.setBuddy(buddy)
    label.setToolTip(buddy.toolTip())
    return label


def _spin(low: int, high: int, value: int, name: str, tip: str) -> QSpinBox:
    spin = QSpinBox(objectName=name)
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _with_browse(edit: QLineEdit, slot) -> QWidget:
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.setToolTip("Choose with a file dialog")
    button.clicked.connect(slot)
    row.addWidget(button)
    return holder
