"""Package-level behaviour: version checks, registries, safe checkpoint loading."""
import collections
import importlib.util
import io
import os
import pathlib
import pickle
import re
import shlex
import shutil
import subprocess
import sys

import mmdet
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import ms_rcnn
from ms_rcnn.testing import REPO_ROOT
from ms_rcnn.utils import compat
from ms_rcnn.utils.checkpoint import (CheckpointMismatchError, NotACheckpointError,
                                     UnsafeCheckpointError, check_checkpoint_fits,
                                     load_local_checkpoint, shape_mismatches)


class TestVersionCheck:

    def test_installed_stack_is_supported(self):
        assert compat.unsupported_packages(compat.installed_versions()) == []

    def test_messages_name_package_version_and_range(self):
        problems = compat.unsupported_packages(
            dict(mmcv='2.2.0', mmengine='0.10.7', mmdet=None))
        assert problems == ['mmcv 2.2.0 is installed (need >=2.0.0,<2.2.0)',
                            'mmdet is not installed (need >=3.3.0,<3.4.0)']

    @pytest.mark.parametrize('found, supported', [
        ('2.1.0', True), ('2.0.0', True), ('2.1.0.post1', True), ('2.1.1rc1', True),
        ('2.2.0rc1', False), ('2.2.0.dev0', False), ('2.2.0', False), ('1.7.2', False),
        ('2.0.0rc4', False),  # a pre-release of the lowest is below it
        ('weird-version', False)])
    def test_versions_are_read_as_pip_reads_the_requirements(self, found, supported):
        problems = compat.unsupported_packages(dict(mmcv=found, mmengine='0.10.7',
                                                    mmdet='3.3.0'))
        assert problems == ([] if supported else
                            [f'mmcv {found} is installed (need >=2.0.0,<2.2.0)'])

    def test_check_raises_with_install_hint(self, monkeypatch):
        monkeypatch.setattr(compat, 'installed_versions',
                            lambda: dict(mmcv='2.1.0', mmengine='0.9.0', mmdet='3.3.0'))
        with pytest.raises(ImportError, match=r'mmengine 0.9.0 .*tools/setup_env.sh'):
            compat.check_versions()

    def test_requirements_file_matches_supported_ranges(self):
        text = open(REPO_ROOT + '/requirements.txt').read()
        for name, (low, high) in compat.SUPPORTED.items():
            assert f'{name}>={low},<{high}' in text


def load_check_torch():
    spec = importlib.util.spec_from_file_location('check_torch', REPO_ROOT + '/tools/check_torch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestTorchRangeCheck:
    """tools/check_torch.py, which tools/setup_env.sh runs before it builds mmcv."""

    def test_reads_the_torch_line_only(self):
        check_torch = load_check_torch()
        text = 'torchvision>=0.1\n# torch<1\ntorch>=2.1,<2.16  # note\nmmdet>=3.3.0,<3.4.0\n'
        assert check_torch.in_range('2.15.0', check_torch.torch_specifier(text))
        assert not check_torch.in_range('2.16.0', check_torch.torch_specifier(text))
        assert check_torch.torch_specifier('mmdet>=3.3\n') == ''
        assert check_torch.torch_specifier('torch-tb-profiler>=1\n') == ''

    @pytest.mark.parametrize('line', [
        'Torch>=2.1,<2.16', 'torch[opt-einsum] >= 2.1, < 2.16', 'torch>=2.1,<2.16 \\\n  ; python_version >= "3.8"',
        'torch>=2.1,<2.16 --hash=sha256:0123', '--index-url https://example.org\ntorch>=2.1,<2.16'])
    def test_reads_the_requirements_format(self, line):
        specifier = load_check_torch().torch_specifier('mmdet>=3.3\n' + line + '\n')
        assert specifier and load_check_torch().in_range('2.15.0', specifier)
        assert not load_check_torch().in_range('2.16.0', specifier)

    @pytest.mark.parametrize('version,expected', [
        ('2.13.0+cpu', True), ('2.14.1+cu130', True), ('2.15.0', True),
        ('2.14.0a0+git1234', True),  # NVIDIA containers' pre-release builds
        ('2.16.0', False), ('2.0.1', False)])
    def test_local_labels_and_pre_releases(self, version, expected):
        assert load_check_torch().in_range(version, '>=2.1,<2.16') is expected

    def test_this_torch_is_in_the_requirements_range(self):
        assert load_check_torch().main([REPO_ROOT + '/requirements.txt']) == 0

    def test_a_torch_outside_the_range_stops_with_the_fix(self, tmp_path, capsys):
        requirements = tmp_path / 'requirements.txt'
        requirements.write_text('torch>=1.0,<2.0\n')
        assert load_check_torch().main([str(requirements)]) == 1
        err = capsys.readouterr().err
        assert f'torch {torch.__version__} is installed' in err
        assert 'tested with torch<2.0,>=1.0' in err and str(requirements) in err
        assert 'pip install "torch' in err and 'whl/cpu' in err

    def test_setup_env_stops_before_building_mmcv(self, tmp_path):
        # A copy of the set-up whose requirements exclude this torch, run with a "venv" whose
        # python is this interpreter: it must stop at the check, before mmcv or pip.
        root = tmp_path / 'repo'
        (root / 'tools').mkdir(parents=True)
        for name in ('setup_env.sh', 'check_torch.py'):
            shutil.copy(f'{REPO_ROOT}/tools/{name}', root / 'tools' / name)
        (root / 'requirements.txt').write_text('torch>=1.0,<2.0\nmmdet>=3.3.0,<3.4.0\n')
        (root / 'setup.cfg').write_text('')
        venv_bin = tmp_path / 'venv' / 'bin'
        venv_bin.mkdir(parents=True)
        # pip is refused, so that a set-up that went past the check cannot touch this venv.
        (venv_bin / 'python').write_text(
            '#!/bin/sh\n[ "$1 $2" = "-m pip" ] && { echo "pip was called" >&2; exit 97; }\n'
            f'exec {shlex.quote(sys.executable)} "$@"\n')
        (venv_bin / 'python').chmod(0o755)
        result = subprocess.run(['bash', str(root / 'tools' / 'setup_env.sh')],
                                env=dict(os.environ, VENV=str(tmp_path / 'venv')),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert 'pip was called' not in result.stderr
        assert f'torch {torch.__version__} is installed' in result.stderr
        assert 'reusing torch' in result.stderr
        assert 'building mmcv' not in result.stderr and 'reusing mmcv' not in result.stderr
        assert not (tmp_path / 'venv' / '.ms_rcnn_setup').exists()

    def test_no_torch_line_is_an_error_naming_the_file(self, tmp_path, capsys):
        requirements = tmp_path / 'requirements.txt'
        requirements.write_text('mmdet>=3.3.0,<3.4.0\n')
        assert load_check_torch().main([str(requirements)]) == 2
        assert str(requirements) in capsys.readouterr().err


class Opaque:
    """Stands for any type a checkpoint should not smuggle in."""

    def __init__(self):
        self.value = 1


class TestSafeCheckpoints:

    def mmengine_like_checkpoint(self):
        buffer = HistoryBuffer()
        for v in (0.5, 0.25, 0.125):
            buffer.update(v)
        return dict(
            meta=dict(epoch=3, iter=30, cfg='model = dict()', seed=1,
                      dataset_meta=dict(classes=('person', ), palette=[(220, 20, 60)])),
            state_dict=collections.OrderedDict(w=torch.arange(4.0)),
            message_hub=dict(log_scalars=collections.OrderedDict({'train/loss': buffer}),
                             runtime_info=collections.OrderedDict(eta=np.float64(1.5),
                                                                  arr=np.arange(3)),
                             resumed_keys=collections.OrderedDict(eta=True)),
            param_schedulers=[dict(milestones=collections.Counter({8: 1, 11: 1}))])

    def test_plain_torch_load_with_weights_only(self, tmp_path):
        path = tmp_path / 'ckpt.pth'
        torch.save(self.mmengine_like_checkpoint(), path)
        loaded = torch.load(path, weights_only=True)
        buffer = loaded['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        assert buffer.data[0].tolist() == [0.5, 0.25, 0.125]
        assert buffer.mean() == pytest.approx(0.875 / 3)
        assert loaded['message_hub']['runtime_info']['eta'] == 1.5
        assert loaded['state_dict']['w'].tolist() == [0, 1, 2, 3]

    def test_history_buffers_pickle_without_getattr(self, tmp_path):
        path = tmp_path / 'ckpt.pth'
        torch.save(self.mmengine_like_checkpoint(), path)
        # What the file would need beyond torch's defaults and our allowlist: nothing, and
        # specifically no builtins.getattr.
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
        assert 'getattr' not in str(torch.serialization.get_safe_globals())

    def test_mmengine_loader_refuses_other_types_with_a_clear_message(self, tmp_path):
        path = tmp_path / 'evil.pth'
        torch.save(dict(state_dict={}, extra=Opaque()), path)
        with pytest.raises(UnsafeCheckpointError) as info:
            _load_checkpoint(str(path), map_location='cpu')
        message = str(info.value)
        assert str(path) in message
        assert 'test_package.Opaque' in message
        assert 'add_safe_globals' in message

    def test_missing_file_is_named(self, tmp_path):
        with pytest.raises(FileNotFoundError, match='nothere.pth'):
            load_local_checkpoint(str(tmp_path / 'nothere.pth'))

    def test_truncated_file_is_refused(self, tmp_path):
        path = tmp_path / 'ckpt.pth'
        torch.save(self.mmengine_like_checkpoint(), path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        with pytest.raises(NotACheckpointError, match=f'{path} is truncated or damaged'):
            load_local_checkpoint(str(path))

    def test_an_empty_file_or_a_directory_is_called_what_it_is(self, tmp_path):
        empty = tmp_path / 'epoch_2.pth'
        empty.write_bytes(b'')
        with pytest.raises(NotACheckpointError, match=re.escape(
                f'checkpoint {empty} is empty (0 bytes): a save or copy that was cut short')):
            load_local_checkpoint(str(empty))
        folder = tmp_path / 'epoch_1.pth'
        folder.mkdir()
        with pytest.raises(FileNotFoundError, match=re.escape(
                f'checkpoint {folder} is a directory, not a checkpoint file')):
            load_local_checkpoint(str(folder))
        with pytest.raises(FileNotFoundError, match=re.escape(
                f'checkpoint {tmp_path / "none.pth"} does not exist')):
            load_local_checkpoint(str(tmp_path / 'none.pth'))

    def test_a_file_torch_did_not_write_is_named(self, tmp_path):
        path = tmp_path / 'instances_val.json'
        path.write_text('{"images": []}')
        with pytest.raises(NotACheckpointError, match=f"{path} is not a PyTorch checkpoint"):
            load_local_checkpoint(str(path))

    @pytest.mark.filterwarnings('ignore:Detected pickle protocol')
    @pytest.mark.parametrize('protocol', [2, pickle.DEFAULT_PROTOCOL])
    def test_a_plain_pickle_is_named(self, tmp_path, protocol):
        path = tmp_path / 'odd.pkl'
        path.write_bytes(pickle.dumps({'a': 1}, protocol=protocol))
        with pytest.raises((NotACheckpointError, UnsafeCheckpointError),
                           match=f'{path} is not a PyTorch checkpoint'):
            load_local_checkpoint(str(path))

    @pytest.mark.parametrize('keep', [0.3, 0.9])
    def test_a_small_truncated_checkpoint_is_named(self, tmp_path, keep):
        path = tmp_path / 'small.pth'
        torch.save({'w': torch.zeros(100)}, path)
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
        with pytest.raises(NotACheckpointError, match=str(path)):
            load_local_checkpoint(str(path))

    @pytest.mark.filterwarnings('ignore:Detected pickle protocol')
    def test_every_cut_of_an_old_format_checkpoint_is_named(self, tmp_path):
        # torch's legacy (pickle) reader fails with EOFError, IndexError or struct.error on
        # some cuts in the first few hundred bytes.
        buf = io.BytesIO()
        torch.save({'state_dict': {'w': torch.ones(50, 50), 'b': torch.ones(7)},
                    'meta': {'epoch': 3}}, buf, _use_new_zipfile_serialization=False)
        data = buf.getvalue()
        path = tmp_path / 'old.pth'
        for length in list(range(4, 600)) + list(range(600, len(data), 97)):
            path.write_bytes(data[:length])
            with pytest.raises((NotACheckpointError, UnsafeCheckpointError)) as info:
                load_local_checkpoint(str(path))
            assert str(path) in str(info.value), (length, info.value)

    def test_unreadable_checkpoint_does_not_advise_unsafe_loading(self, tmp_path, monkeypatch):
        path = tmp_path / 'odd.pth'
        torch.save({'a': 1}, path)
        torch_message = ('Weights only load failed. Re-running `torch.load` with `weights_only` '
                         'set to `False` will likely succeed, but it can result in arbitrary '
                         'code execution.\nWeightsUnpickler error: \n\nUnsupported operand 7')

        def fail(*args, **kwargs):
            raise pickle.UnpicklingError(torch_message)

        monkeypatch.setattr(torch, 'load', fail)
        monkeypatch.setattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                            lambda f: [])
        with pytest.raises(UnsafeCheckpointError) as info:
            load_local_checkpoint(str(path))
        assert str(info.value) == (f'checkpoint {path} cannot be loaded safely: '
                                   'Unsupported operand 7')


class TestCheckpointFit:

    def model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))

    def test_a_fitting_checkpoint_passes_with_or_without_the_module_prefix(self):
        model = self.model()
        state = model.state_dict()
        del state['1.num_batches_tracked']  # older checkpoints lack it
        check_checkpoint_fits(model, {'state_dict': state}, 'a.pth')
        check_checkpoint_fits(model, {'module.' + k: v for k, v in state.items()}, 'a.pth')

    def test_missing_parameters_are_refused_and_grouped(self):
        model = self.model()
        state = {k: v for k, v in model.state_dict().items() if not k.startswith('1.')}
        with pytest.raises(CheckpointMismatchError) as info:
            check_checkpoint_fits(model, {'state_dict': state}, 'mask_rcnn.pth')
        message = str(info.value)
        assert 'mask_rcnn.pth' in message and 'lacks 4 ' in message and '1.* (4)' in message

    def test_other_shapes_are_refused(self):
        model = self.model()
        state = dict(model.state_dict(), **{'0.weight': torch.zeros(5, 4)})
        with pytest.raises(CheckpointMismatchError, match=r'0.weight: \(5, 4\) in the checkpoint'
                           r', \(3, 4\) in the model') as info:
            check_checkpoint_fits(model, state, 'b.pth')
        assert 'lacks' not in str(info.value)  # present, with another shape: not missing too

    def test_extra_entries_are_only_reported(self):
        model = self.model()
        state = dict(model.state_dict(), **{'mask_iou_head.fc.weight': torch.zeros(1)})
        assert shape_mismatches(model.state_dict(), state) == {}
        check_checkpoint_fits(model, state, 'c.pth')

    def test_allowed_gaps_pass(self):
        model = self.model()
        state = {k: v for k, v in model.state_dict().items() if not k.startswith('1.')}
        check_checkpoint_fits(model, state, 'd.pth', may_lack=('1.', ))

    def test_keys_a_module_renames_while_loading_count_as_present(self):
        # Like mmdet's heads that accept their old parameter names (FCOS's fcos_cls, ...).
        class Renaming(torch.nn.Linear):
            def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
                for name in ('weight', 'bias'):
                    if prefix + 'old_' + name in state_dict:
                        state_dict[prefix + name] = state_dict.pop(prefix + 'old_' + name)
                super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

        torch.manual_seed(0)
        model = torch.nn.Sequential(Renaming(4, 3))
        old = {'0.old_weight': torch.ones(3, 4), '0.old_bias': torch.zeros(3)}
        check_checkpoint_fits(model, {'state_dict': old}, 'old.pth')
        assert torch.equal(model[0].weight, torch.ones(3, 4))


ROOT = pathlib.Path(REPO_ROOT)


class TestModelIndex:
    """model-index.yml and the metafile it imports, which `mim search` / `mim download` read."""

    @staticmethod
    def models():
        from ms_rcnn.utils.config import model_index_entries
        return model_index_entries()

    def test_every_entry_names_an_existing_config_after_its_file(self):
        models = self.models()
        assert models
        for model in models:
            config = ROOT / model['Config']
            assert config.is_file(), f"{model['Name']}: {model['Config']} does not exist"
            assert model['Name'] == config.stem, model['Name']

    def test_the_entries_are_the_configs_with_published_weights(self):
        """`mim download` fails with an AttributeError on an entry without weights: only the
        configs whose checkpoints mmdet's model zoo publishes are listed, each once."""
        import yaml
        names = [model['Name'] for model in self.models()]
        assert len(names) == len(set(names))
        assert all(model.get('Weights') for model in self.models())
        mmdet_metafile = pathlib.Path(mmdet.__file__).parent / '.mim/configs/ms_rcnn/metafile.yml'
        if not mmdet_metafile.is_file():
            pytest.skip(f'mmdet installed without its configs ({mmdet_metafile})')
        theirs = yaml.safe_load(mmdet_metafile.read_text())['Models']
        assert sorted(names) == sorted(m['Name'] for m in theirs if m.get('Weights'))
        assert {m['Name']: m['Weights'] for m in self.models()} == {
            m['Name']: m['Weights'] for m in theirs}

    def test_weights_belong_to_the_entry(self):
        # mmdet 2.x's file names spell the config with underscores: ms_rcnn_r50_caffe_fpn_1x_coco.
        for model in self.models():
            folder = model['Weights'].split('/')[-2]
            assert folder == model['Name'].replace('-', '_'), model['Name']


def test_make_targets_run_from_any_directory_and_follow_venv(tmp_path):
    """`make -f path/to/Makefile test` from elsewhere, and VENV=DIR as tools/setup_env.sh
    takes it (relative to where make runs)."""
    makefile = os.path.join(REPO_ROOT, 'Makefile')
    # as a top-level make (CI runs this suite inside `make test`), without a VENV of ours
    env = {k: v for k, v in os.environ.items()
           if k not in ('MAKELEVEL', 'MAKEFLAGS', 'MFLAGS', 'VENV')}

    def dry_run(*args):
        return subprocess.run(['make', '--no-print-directory', '-n', '-f', makefile, *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=True).stdout.splitlines()

    dry = dry_run('test', 'ARGS=-x')
    venv = os.path.join(REPO_ROOT, '.venv')
    assert dry == [f'cd "{REPO_ROOT}" && VENV="{venv}" bash tools/setup_env.sh',
                   f'cd "{REPO_ROOT}" && "{venv}/bin/python" -m pytest tests -x']
    dry = dry_run('demo', 'VENV=env')
    assert dry[0].endswith(f'VENV="{tmp_path / "env"}" bash tools/setup_env.sh')
    assert dry[1] == f'cd "{REPO_ROOT}" && "{tmp_path / "env"}/bin/python" tools/demo.py '
