from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM


@register_model("ilora")
class IloraLM(HFLM):
    pass
