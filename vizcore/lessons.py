"""What each technique computes, in the lecture's terms: formula, steps, paper, what to look for.

CS231n's "Visualizing and Understanding" teaches each technique as a formula and a few steps. One
:class:`Lesson` per technique holds that text, written against *this* code: every formula is what
the function computes, and where the code differs from the paper the lesson says so
(``deviation``; the function's docstring says the same). The app shows a lesson in a "How it
works" panel beside the live result, with numbers from the current run; a notebook can print one.
Keys are the library's method ids (the keys of :data:`vizcore.attribution.METHODS`,
and the technique function names elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Lesson:
    """The lecture's view of one technique.

    Attributes:
        title: The technique's name.
        formula: LaTeX (one display formula; ``st.latex`` renders it).
        steps: The algorithm in 3-6 plain steps.
        paper: ``(citation, url)``.
        look_for: What a good result shows and how to read it.
        pitfalls: Known ways to misread it.
        deviation: Where this code differs from the paper ("" when it does not).
    """

    title: str
    formula: str
    steps: tuple[str, ...]
    paper: tuple[str, str]
    look_for: str
    pitfalls: str
    deviation: str = ""


_ZF = ("Zeiler & Fergus, ECCV 2014", "https://arxiv.org/abs/1311.2901")
_SIMONYAN = ("Simonyan, Vedaldi & Zisserman, ICLR workshop 2014", "https://arxiv.org/abs/1312.6034")
_GRADCAM = ("Selvaraju et al., ICCV 2017", "https://arxiv.org/abs/1610.02391")
_OLAH = (
    "Olah, Mordvintsev & Schubert, Distill 2017",
    "https://distill.pub/2017/feature-visualization/",
)
_GATYS_STYLE = ("Gatys, Ecker & Bethge, CVPR 2016", "https://arxiv.org/abs/1508.06576")

_CAM_SUM = r"L^c(i,j) = \mathrm{ReLU}\Big(\sum_k w^c_k\, A^k(i,j)\Big)"

LESSONS: MappingProxyType[str, Lesson] = MappingProxyType(
    {
        # ---------------------------------------------------------------- inside the network
        "first_layer_filters": Lesson(
            "First-layer filters",
            r"\mathrm{tile}_f = \frac{W_f - \min W_f}{\max W_f - \min W_f}",
            (
                "Take the first convolution's weights W (filters x 3 x k x k).",
                "Scale each filter to [0, 1] on its own.",
                "Show its three input channels as RGB.",
            ),
            (
                "Krizhevsky, Sutskever & Hinton, NeurIPS 2012",
                "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
            ),
            "Oriented edges, colour blobs and opposing-colour pairs: the first layer sees pixels "
            "directly, so its weights are readable as pictures.",
            "Only the first layer reads like this: later filters act on feature maps, not RGB, "
            "so their weights say little by themselves. 3x3 kernels (both bundled nets) have "
            "too few pixels to show AlexNet's 11x11 Gabor-like stripes; the same edge detectors "
            "are there, at 9 pixels each.",
            "The weights act on the model's normalized input, so colours are in that space.",
        ),
        "activations": Lesson(
            "Activation maps",
            r"A^c = f_\ell(x)[c] \in \mathbb{R}^{h \times w}",
            (
                "Run the image through the network once.",
                "Keep layer l's output.",
                "Show each channel c as a grey map, sorted by its mean or peak.",
            ),
            ("Yosinski et al., ICML DL workshop 2015", "https://arxiv.org/abs/1506.06579"),
            "Early layers: edges and colours laid out like the image. Deep layers: few, sparse "
            "blobs on object parts (a face, a wheel).",
            "Many deep channels are all zero for a given image: that is normal (sparse codes), "
            "not a bug. A map's position is coarse: one cell of a 7x7 map covers 32x32 pixels.",
        ),
        "max_patches": Lesson(
            "Maximally activating patches",
            r"\text{patches}(c) = \operatorname{top}_{n,\,(i,j)}\; A^c(x_n)(i,j)",
            (
                "Run every gallery image and keep layer l's channel c.",
                "Find the positions with the largest activation over all images.",
                "Crop each position's receptive field from its image.",
            ),
            ("Girshick et al., CVPR 2014", "https://arxiv.org/abs/1311.2524"),
            "A common theme across the patches (the same texture, part or object): that is "
            "what the unit detects.",
            "Only as good as the gallery: a unit for something the gallery lacks shows its "
            "nearest substitutes. The crop is the theoretical receptive field; the effective "
            "one is smaller.",
            "The receptive field is computed from the layer geometry (strides, kernels).",
        ),
        "neighbours": Lesson(
            "Nearest neighbours",
            r"\operatorname{NN}(x) = \arg\min_n d\big(\phi(x), \phi(x_n)\big)",
            (
                "Compute phi(x): the layer's features, averaged over positions.",
                "Compute the same for every gallery image.",
                "Rank the gallery by distance (cosine or Euclidean); compare with raw pixels.",
            ),
            (
                "Krizhevsky, Sutskever & Hinton, NeurIPS 2012",
                "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
            ),
            "Feature neighbours share content (the same kind of object in other poses); pixel "
            "neighbours share colour and layout.",
            "The gallery decides what can be found; a class the gallery lacks has no true "
            "neighbour.",
            "Pixel space is 32x32 RGB (area average), so the comparison is cheap.",
        ),
        "feature_map": Lesson(
            "t-SNE / PCA map",
            r"p_{j|i} \propto e^{-\|\phi_i-\phi_j\|^2/2\sigma_i^2},\;"
            r"q_{ij} \propto (1+\|y_i-y_j\|^2)^{-1},\; \min_y \mathrm{KL}(P\,\|\,Q)",
            (
                "Features of every gallery image; PCA to 50 dimensions.",
                "t-SNE: match neighbour probabilities P (features) and Q (2-D points).",
                "Place the current image on the fixed map (openTSNE's transform).",
            ),
            (
                "van der Maaten & Hinton, JMLR 2008",
                "https://jmlr.org/papers/v9/vandermaaten08a.html",
            ),
            "Clusters of one class, and mixed regions where the network confuses classes.",
            "Distances between clusters and cluster sizes mean little in t-SNE; perplexity "
            "changes the picture. PCA keeps distances but mixes more.",
            "Barnes-Hut gradient, exact neighbours, PCA initialization, fixed seed.",
        ),
        # --------------------------------------------------------------------- attribution
        "occlusion": Lesson(
            "Occlusion",
            r"M(u) = \operatorname*{mean}_{W \ni u}"
            r"\big[p_c(x) - p_c(x_{W \leftarrow \text{fill}})\big]",
            (
                "Slide a window over the image with the chosen stride.",
                "Replace the window's pixels with the fill and classify again.",
                "The drop in the class probability is that window's score; average overlaps.",
            ),
            _ZF,
            "Red where hiding the patch hurts the class: the evidence the network needs.",
            "The window size sets what can be found (a small window misses large objects, "
            "a large one blurs); the fill itself can look like evidence (a grey square).",
            "The paper plots the probability; the drop is the same picture inverted.",
        ),
        "saliency": Lesson(
            "Saliency (vanilla gradient)",
            r"M(u) = \max_{ch} \left|\frac{\partial S_c}{\partial x_{ch}(u)}\right|",
            (
                "Forward the image; take the class score S_c (the logit).",
                "Backpropagate to the pixels.",
                "Take the absolute value, the largest over RGB.",
            ),
            _SIMONYAN,
            "Speckles concentrated on the object.",
            "Noisy and local: a gradient says how a tiny change would act, not what matters "
            "most. It can light up edges of anything.",
        ),
        "smoothgrad": Lesson(
            "SmoothGrad",
            r"\hat M(x) = \frac{1}{n}\sum_{i=1}^{n} M\big(x + \mathcal{N}(0, \sigma^2)\big)",
            (
                "Add Gaussian noise to the image n times.",
                "Compute the saliency map of each.",
                "Average the maps.",
            ),
            ("Smilkov et al. 2017", "https://arxiv.org/abs/1706.03825"),
            "A cleaner saliency map: the speckle averages out, the object stays.",
            "n times the cost; too much noise blurs everything.",
            "sigma is a fraction of the image's value range; noisy images are not clipped.",
        ),
        "deconvnet": Lesson(
            "Deconvnet",
            r"R_{\text{in}} = \max(R_{\text{out}}, 0)\quad\text{at every ReLU}",
            (
                "Forward the image.",
                "Backpropagate the class score.",
                "At every ReLU pass only positive signals, ignoring the forward mask.",
            ),
            _ZF,
            "Sharp, image-like edges.",
            "It hardly depends on the class: the sanity check on this page measures its map "
            "almost unchanged (rank correlation near 1) when the top layers are randomized. "
            "It reconstructs the image more than it explains the decision.",
            "Max-pool switches are the gradient's, the same as the paper's switches.",
        ),
        "guided_backprop": Lesson(
            "Guided backprop",
            r"R_{\text{in}} = [x_{\text{pre}} > 0]\cdot\max(R_{\text{out}}, 0)"
            r"\quad\text{at every ReLU}",
            (
                "Forward the image.",
                "Backpropagate the class score.",
                "At every ReLU keep the gradient only where the input was positive and the "
                "gradient is positive.",
            ),
            ("Springenberg et al., ICLR workshop 2015", "https://arxiv.org/abs/1412.6806"),
            "Crisp object edges.",
            "Not class-specific, and it barely changes when the top layers are randomized "
            "(Adebayo et al. 2018): the sanity check on this page shows it.",
            "ReLU6 (EfficientNet-Lite) is handled with its own mask 0 < x < 6.",
        ),
        "cam": Lesson(
            "CAM",
            _CAM_SUM
            + r",\quad w^c_k = \text{classifier weight of channel } k \text{ for class } c",
            (
                "Take the feature maps A^k feeding the global average pool.",
                "Weigh each by the classifier's weight for the class.",
                "Sum, ReLU, upsample to the image.",
            ),
            ("Zhou et al., CVPR 2016", "https://arxiv.org/abs/1512.04150"),
            "A coarse blob over the class's object.",
            "Only for GAP + linear (or 1x1 conv) heads, and only at that layer; resolution is "
            "that layer's (7x7 on Lite0, 13x13 on SqueezeNet).",
            "The ReLU is kept (the paper drops it).",
        ),
        "grad_cam": Lesson(
            "Grad-CAM",
            _CAM_SUM
            + r",\quad w^c_k = \frac{1}{hw}\sum_{i,j}\frac{\partial S_c}{\partial A^k(i,j)}",
            (
                "Forward; keep the layer's maps A^k.",
                "Backpropagate the class score to that layer only.",
                "Average each channel's gradient: its weight.",
                "Weighted sum of the maps, ReLU, upsample.",
            ),
            _GRADCAM,
            "A coarse blob on the asked class; ask another class and it should move.",
            "Resolution is the layer's: the last feature map is 7x7, so one cell covers 32x32 "
            "pixels. An earlier layer is sharper but less class-specific.",
            "Upsampling is bilinear.",
        ),
        "guided_grad_cam": Lesson(
            "Guided Grad-CAM",
            r"R = \mathrm{GB}(x) \odot \mathrm{up}(L^c_{\text{Grad-CAM}})",
            (
                "Compute guided backprop (sharp, not class-specific).",
                "Compute Grad-CAM (coarse, class-specific).",
                "Multiply them pixel by pixel.",
            ),
            _GRADCAM,
            "Sharp edges, but only inside the class's region.",
            "Inherits guided backprop's insensitivity to the model (sanity check).",
            "Grad-CAM is upsampled bilinearly (captum uses nearest).",
        ),
        "grad_cam_plus_plus": Lesson(
            "Grad-CAM++",
            _CAM_SUM + r",\quad w^c_k = \sum_{i,j}\alpha^{kc}_{ij}\,\mathrm{ReLU}"
            r"\Big(\frac{\partial S_c}{\partial A^k_{ij}}\Big),\;"
            r"\alpha = \frac{g^2}{2g^2 + \sum_{ab}A^k_{ab}\,g^3}",
            (
                "As Grad-CAM, but weight only positive gradients,",
                "each position by alpha (from second and third derivatives),",
                "so several instances of a class all count.",
            ),
            ("Chattopadhyay et al., WACV 2018", "https://arxiv.org/abs/1710.11063"),
            "Better coverage of several objects of one class.",
            "Same resolution limits as Grad-CAM.",
            "S is the logit, not exp(logit), as in every public implementation.",
        ),
        "score_cam": Lesson(
            "Score-CAM",
            _CAM_SUM + r",\quad w^c = \operatorname{softmax}_k S_c\big(x \odot H^k\big)",
            (
                "Upsample each channel map A^k to the image and scale it to [0, 1]: a mask H^k.",
                "Classify the image multiplied by each mask.",
                "Softmax of those class scores over channels: the weights.",
            ),
            ("Wang et al., CVPR workshops 2020", "https://arxiv.org/abs/1910.01279"),
            "A smooth blob without gradient noise.",
            "One forward per channel (slow); at a layer before its activation the weighted sum "
            "can be negative everywhere and the map blank.",
            "Softmax over the masked logits instead of the paper's probability increase "
            "(as pytorch-grad-cam).",
        ),
        "integrated_gradients": Lesson(
            "Integrated gradients",
            r"\mathrm{IG}_i = (x_i - x'_i)\int_0^1 \frac{\partial S_c(x' + \alpha(x - x'))}"
            r"{\partial x_i}\,d\alpha,\quad x' = 0",
            (
                "Walk from a black image to this one in n steps.",
                "Take the gradient at each step.",
                "Average, times the pixel difference.",
            ),
            ("Sundararajan, Taly & Yan, ICML 2017", "https://arxiv.org/abs/1703.01365"),
            "Attributions that add up to S(x) - S(black): the completeness error is shown.",
            "The baseline decides the answer: black pixels get no attribution from a black "
            "baseline.",
            "Gauss-Legendre quadrature (captum's default) instead of a Riemann sum.",
        ),
        "deletion_insertion": Lesson(
            "Deletion / insertion curves",
            r"\mathrm{AUC}_{\text{del}} = "
            r"\int_0^1 p_c\big(x \text{ with top } f \text{ removed}\big)\,df",
            (
                "Rank pixels by the map.",
                "Remove the top fraction f (deletion) or add it to a blurred image (insertion).",
                "Classify at each f; area under the curve.",
            ),
            ("Petsiuk, Das & Saenko, BMVC 2018", "https://arxiv.org/abs/1806.07421"),
            "Low deletion AUC and high insertion AUC: the map found what the model uses.",
            "Removed pixels are out of distribution, so the test partly measures that.",
            "Evenly spaced fractions instead of 224 pixels per step.",
        ),
        "randomization_check": Lesson(
            "Sanity check (model randomization)",
            r"\rho_t = \mathrm{Spearman}\big(M(x; \theta),\,"
            r" M(x; \theta_{\text{top } t \text{ random}})\big)",
            (
                "Copy the model.",
                "Re-initialize its top layers, one more each step.",
                "Recompute the map; rank-correlate it with the original.",
            ),
            ("Adebayo et al., NeurIPS 2018", "https://arxiv.org/abs/1810.03292"),
            "A method that explains the model falls towards 0; one that stays near 1 is "
            "showing the image, not the model.",
            "Correlation of absolute maps can stay high for edge detectors of any kind.",
            "Conv/linear weights re-drawn (Kaiming normal), normalization layers kept.",
        ),
        "grabcut": Lesson(
            "Segmentation from saliency (GrabCut)",
            r"\text{fg seeds} = \{M > P_{95}(M)\},\quad \text{bg seeds} = \{M < P_{30}(M)\}",
            (
                "Smooth the attribution map.",
                "Its top pixels seed the foreground, its bottom ones the background.",
                "GrabCut's colour models spread the labels.",
            ),
            _SIMONYAN,
            "A mask around the object, from a classifier that was never trained to segment.",
            "Fails when the object's colours match the background.",
            "The map is smoothed first; pixels between the thresholds get a prior by the median.",
        ),
        # ---------------------------------------------------------- feature visualization
        "class_visualization": Lesson(
            "Class visualization",
            r"I^* = \arg\max_I\; S_c(I) - \lambda \|I\|_2^2",
            (
                "Start from a grey (or Fourier-noise) image.",
                "Gradient ascent on the class score.",
                "Regularize: L2 decay, blur, jitter/zoom, clipping.",
            ),
            _SIMONYAN,
            "Object parts of the class repeated over the image (eyes, fur, wheels).",
            "Without regularizers the result is adversarial noise with a high score; the "
            "regularizers decide much of the look.",
            "Fourier parameterization and random transforms (Olah et al. 2017) by default.",
        ),
        "neuron_visualization": Lesson(
            "Neuron / channel visualization",
            r"I^* = \arg\max_I\; \operatorname*{mean}_{i,j} A^c_\ell(I)(i,j)",
            (
                "Start from Fourier noise.",
                "Gradient ascent on the channel's mean activation (or its centre unit).",
                "Random jitter, zoom and rotation each step.",
            ),
            _OLAH,
            "The pattern the unit responds to: textures early, parts and objects deeper.",
            "One image shows one facet; compare with the max patches on the first page.",
        ),
        "feature_inversion": Lesson(
            "Feature inversion",
            r"I^* = \arg\min_I \frac{\|\phi_\ell(I) - \phi_\ell(I_0)\|^2}{\|\phi_\ell(I_0)\|^2}"
            r" + \lambda_{TV}\,\mathrm{TV}(I)",
            (
                "Take the photo's features at layer l.",
                "Start from grey plus noise.",
                "Find an image with the same features (plus a smoothness prior).",
            ),
            ("Mahendran & Vedaldi, CVPR 2015", "https://arxiv.org/abs/1412.0035"),
            "Shallow layers give the photo back; deep ones keep the layout of parts and lose "
            "colour and detail: what the layer has thrown away.",
            "The TV weight trades detail for smoothness; it grows with depth here.",
            "TV is the mean squared neighbour difference; Adam with jitter.",
        ),
        "deepdream": Lesson(
            "DeepDream",
            r"I \leftarrow I + \eta\,\frac{g}{\operatorname{mean}|g|},\quad"
            r"g = \nabla_I\, \tfrac12 \operatorname{mean} A_\ell(I)^2",
            (
                "Forward the photo to layer l.",
                "Set the layer's gradient to its activation "
                "(the gradient of half its squared norm).",
                "Step the image; repeat over octaves.",
            ),
            (
                "Mordvintsev, Olah & Tyka 2015",
                "https://research.google/blog/inceptionism-going-deeper-into-neural-networks/",
            ),
            "Whatever the layer sees gets amplified: textures early, eyes and animal parts deep.",
            "Strongly biased by the training set (ImageNet's dogs).",
        ),
        "multifaceted": Lesson(
            "Multifaceted class visualization",
            r"I_k^* = \arg\max_I S_c(I) + \beta\,\mathrm{centre}(M_c(I)),\;"
            r"I \text{ starts at cluster } k",
            (
                "Gallery images the model assigns to the class.",
                "Cluster their features (k-means).",
                "One class visualization per cluster, started from its images, centre-biased.",
            ),
            ("Nguyen, Yosinski & Clune 2016", "https://arxiv.org/abs/1602.03616"),
            "Different facets of one class (a face, a whole body, fur).",
            "Only the gallery's facets can appear.",
            "The centre bias is one differentiable term instead of the paper's schedule.",
        ),
        # ---------------------------------------------------------------- adversarial
        "fgsm": Lesson(
            "FGSM",
            r"x' = \mathrm{clip}_{[0,1]}\big(x + \epsilon\,\operatorname{sign}\nabla_x"
            r"\mathrm{CE}(f(x), y)\big)",
            (
                "Gradient of the loss for the current label.",
                "One step of size epsilon along its sign (against it, for a target class).",
                "Clip to valid pixels.",
            ),
            ("Goodfellow, Shlens & Szegedy, ICLR 2015", "https://arxiv.org/abs/1412.6572"),
            "A change no one can see that changes the prediction.",
            "One step often only reaches a similar class (another cat).",
        ),
        "pgd": Lesson(
            "PGD / iterative attack",
            r"x_{t+1} = \Pi_{\|x - x_0\|_\infty \le \epsilon}\big(x_t \pm \alpha\,"
            r"\operatorname{sign}\nabla_x \mathrm{CE}(f(x_t), y)\big)",
            (
                "Repeat small sign-gradient steps.",
                "Project back into the epsilon box around the photo.",
                "Untargeted: move away from y; targeted: towards t.",
            ),
            ("Madry et al., ICLR 2018", "https://arxiv.org/abs/1706.06083"),
            "The top-1 flips while the perturbation stays below 4/255 per pixel.",
            "Untargeted attacks take the easiest exit, usually a neighbouring class.",
            "No random start by default (Kurakin et al.'s basic iterative method).",
        ),
        # ------------------------------------------------------------ texture and style
        "texture_synthesis": Lesson(
            "Texture synthesis (Gram matrices)",
            r"\min_x \sum_\ell w_\ell \frac{\|G_\ell(x) - G_\ell(s)\|^2}{\|G_\ell(s)\|^2},\quad"
            r"G_\ell = \frac{F_\ell F_\ell^\top}{h_\ell w_\ell}",
            (
                "Features F of the sample at several layers.",
                "Gram matrix: channel-by-channel correlations, positions averaged away.",
                "Optimize noise until its Gram matrices match.",
            ),
            ("Gatys, Ecker & Bethge, NeurIPS 2015", "https://arxiv.org/abs/1505.07376"),
            "The sample's texture without its layout.",
            "Large structures (bricks, letters) break up: Gram matrices know no positions.",
            "Relative losses instead of 1/(4 C^2 (hw)^2), so weights work on both nets.",
        ),
        "style_transfer": Lesson(
            "Style transfer (Gatys)",
            r"\min_I\; \alpha\,\mathcal{L}_{\text{content}}(I, x) + \beta\,"
            r"\mathcal{L}_{\text{style}}(I, s) + \gamma\,\mathrm{TV}(I)",
            (
                "Start from the photo.",
                "Match its deep features (content).",
                "Match the style image's Gram matrices (style).",
                "Optimize the image.",
            ),
            _GATYS_STYLE,
            "The photo's layout painted with the style's colours and strokes.",
            "The ratio of style to content weight is what matters.",
            "Relative losses; the bundled classifiers instead of VGG-19.",
        ),
        "fast_style": Lesson(
            "Fast style transfer",
            r"y = T_{\gamma_s,\beta_s}(x),\quad \gamma = (1-b)\gamma_{s_1} + b\,\gamma_{s_2}",
            (
                "A network T was trained offline to minimize the Gatys losses.",
                "Stylizing is one forward pass.",
                "Conditional instance norm: one (gamma, beta) per style; mixing them blends.",
            ),
            ("Johnson, Alahi & Fei-Fei, ECCV 2016", "https://arxiv.org/abs/1603.08155"),
            "A stylized image in a fraction of a second.",
            "Only the trained styles; quality is below per-image optimization.",
            "Slimmer network; predicts a change of the photo.",
        ),
        "quilting": Lesson(
            "Image quilting (non-neural)",
            r"E(p) = \sum_{\text{overlap}} \|\text{out} - \text{sample}_p\|^2,\quad"
            r"p \in \{E \le (1+\text{tol}) \min E\}",
            (
                "Place sample patches in raster order.",
                "Choose among patches whose overlap matches well.",
                "Cut along the minimum-error boundary.",
            ),
            ("Efros & Freeman, SIGGRAPH 2001", "https://doi.org/10.1145/383259.383296"),
            "Every pixel is copied from the sample: crisp, but only what the sample has.",
            "Visible repeats when the sample is small.",
        ),
    }
)


def lesson(key: str) -> Lesson:
    """The lesson of technique ``key``.

    Raises:
        ValueError: Unknown key (lists the known ones).
    """
    try:
        return LESSONS[key]
    except KeyError:
        raise ValueError(f"No lesson for {key!r}; known: {', '.join(sorted(LESSONS))}.") from None
