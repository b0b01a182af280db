"""Package-level behaviour: version checks, registries, safe checkpoint loading."""
import collections
import pathlib
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import ms_rcnn
from ms_rcnn.testing import REPO_ROOT
from ms_rcnn.utils import compat
from ms_rcnn.utils.checkpoint import UnsafeCheckpointError, load_local_checkpoint


class TestVersionCheck:

    def test_installed_stack_is_supported(self):
        assert compat.unsupported_packages(compat.installed_versions()) == []

    def test_messages_name_package_version_and_range(self):
        problems = compat.unsupported_packages(
            dict(mmcv='2.2.0', mmengine='0.10.7', mmdet=None))
        assert problems == ['mmcv 2.2.0 is installed (need >=2.0.0,<2.2.0)',
                            'mmdet is not installed (need >=3.3.0,<3.4.0)']

    def test_check_raises_with_install_hint(self, monkeypatch):
        monkeypatch.setattr(compat, 'installed_versions',
                            lambda: dict(mmcv='2.1.0', mmengine='0.9.0', mmdet='3.3.0'))
        with pytest.raises(ImportError, match=r'mmengine 0.9.0 .*tools/setup_env.sh'):
            compat.check_versions()

    def test_requirements_file_matches_supported_ranges(self):
        text = open(REPO_ROOT + '/requirements.txt').read()
        for name, (low, high) in compat.SUPPORTED.items():
            assert f'{name}>={low},<{high}' in text


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
        with pytest.raises((RuntimeError, pickle.UnpicklingError, EOFError)):
            load_local_checkpoint(str(path))

    def test_local_loader_is_registered(self):
        assert CheckpointLoader._get_checkpoint_loader('/some/file.pth') is load_local_checkpoint


ROOT = pathlib.Path(REPO_ROOT)


class TestModelIndex:
    """model-index.yml and the metafile it imports, which `mim search` / `mim download` read."""

    @staticmethod
    def models():
        import yaml
        index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
        models = []
        for path in index['Import']:
            models += yaml.safe_load((ROOT / path).read_text())['Models']
        return models

    def test_every_entry_names_an_existing_config_after_its_file(self):
        models = self.models()
        assert models
        for model in models:
            config = ROOT / model['Config']
            assert config.is_file(), f"{model['Name']}: {model['Config']} does not exist"
            assert model['Name'] == config.stem, model['Name']

    def test_every_config_is_listed_once(self):
        names = [model['Name'] for model in self.models()]
        assert len(names) == len(set(names))
        configs = sorted(p.stem for p in (ROOT / 'configs' / 'ms_rcnn').glob('*.py'))
        assert sorted(names) == configs

    def test_weights_belong_to_the_entry(self):
        # mmdet 2.x's file names spell the config with underscores: ms_rcnn_r50_caffe_fpn_1x_coco.
        with_weights = [m for m in self.models() if 'Weights' in m]
        assert with_weights
        for model in with_weights:
            folder = model['Weights'].split('/')[-2]
            assert folder == model['Name'].replace('-', '_'), model['Name']
