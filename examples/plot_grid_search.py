"""
Searching shots and loss weights with GridSearchCV and FewShotSplit
===================================================================

:class:`~sklearn_cmm.model_selection.FewShotSplit` draws ``n_shots`` training images per
class and tests on the rest, the few-shot protocol of CLIP papers, as a scikit-learn
splitter. With it, :class:`~sklearn.model_selection.GridSearchCV` searches how many shots
a classifier keeps (``n_shots``) and its loss weights. The images are embedded once, and
the search runs on the embeddings.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV

from sklearn_cmm import CLIPFeaturizer, CrossModalMappingClassifier
from sklearn_cmm.bundled import BUNDLED_MODEL, load_fashion_mnist_sample
from sklearn_cmm.model_selection import FewShotSplit

data = load_fashion_mnist_sample()
featurizer = CLIPFeaturizer(BUNDLED_MODEL, pretrained="bundled")
X = featurizer.fit_transform(data.images)
y = np.asarray(data.target_names)[data.target]

# %%
# Each split trains on 4 images per class; the classifier may keep fewer.
search = GridSearchCV(
    CrossModalMappingClassifier(
        text_encoder=featurizer.text_encoder(), templates=data.templates, random_state=0
    ),
    {"n_shots": [1, 2, 4], "triplet_weight": [0.1, 1.0]},
    cv=FewShotSplit(n_shots=4, n_splits=3, random_state=0),
)
search.fit(X, y)
print("best:", search.best_params_, f"top-1 {search.best_score_:.3f}")

# %%
# Accuracy grows with shots; the triplet weight matters less.
table = pd.DataFrame(search.cv_results_)
for weight, group in table.groupby("param_triplet_weight"):
    plt.errorbar(group["param_n_shots"], group["mean_test_score"],
                 yerr=group["std_test_score"], marker="o", label=f"triplet_weight={weight}")
plt.xlabel("n_shots kept by the classifier")
plt.ylabel("top-1 accuracy (cross-validated)")
plt.legend()
plt.show()
