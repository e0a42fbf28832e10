//! The labeler's vocabulary: mention phrases per finding kind, and the negation and uncertainty
//! triggers. Written for this project from the CheXpert observation definitions (Irvin et al.,
//! AAAI 2019, §"Labeler") and the wording of IU X-Ray reports; not a copy of the CheXpert
//! labeler's lists.
//!
//! Pattern syntax (one pattern = words separated by spaces):
//! * `word` matches that lower-case word; `pref*` any word starting with `pref`;
//! * `..` skips 0 to [`super::labeler::MAX_GAP`] words of the same clause, so "heart .. enlarg*"
//!   covers "heart is enlarged" and "heart size is mildly enlarged". A negation or uncertainty
//!   trigger inside the skipped words applies to the mention ("heart is not enlarged").

use super::labeler::Kind;

/// How a matched phrase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A mention of the finding; its certainty comes from the triggers around it.
    Mention,
    /// Names the organ the finding is about ("heart size", "mediastinum") without saying it is
    /// abnormal: it counts only when negated or called normal ("heart size is normal" is a
    /// negative cardiomegaly mention), so "the heart size is stable" stays blank.
    Neutral,
    /// Consumes its words without a mention ("pericardial effusion" is not pleural fluid,
    /// "pleural line" is not a tube).
    Ignore,
}

/// Every phrase, as (kind, pattern, role). The longest match at a position wins.
pub const PHRASES: &[(Kind, &str, Role)] = &[
    // Enlarged cardiomediastinum.
    (Kind::WideMediastinum, "mediastin* .. widen*", Role::Mention),
    (Kind::WideMediastinum, "widen* .. mediastin*", Role::Mention),
    (
        Kind::WideMediastinum,
        "mediastin* .. enlarg*",
        Role::Mention,
    ),
    (Kind::WideMediastinum, "enlarged mediastin*", Role::Mention),
    (
        Kind::WideMediastinum,
        "cardiomediastinal .. enlarg*",
        Role::Mention,
    ),
    (
        Kind::WideMediastinum,
        "enlarged cardiomediastinal",
        Role::Mention,
    ),
    (Kind::WideMediastinum, "mediastin*", Role::Neutral),
    (Kind::WideMediastinum, "cardiomediastinal", Role::Neutral),
    // Cardiomegaly.
    (Kind::Cardiomegaly, "cardiomegaly", Role::Mention),
    (Kind::Cardiomegaly, "heart .. enlarg*", Role::Mention),
    (Kind::Cardiomegaly, "cardiac .. enlarg*", Role::Mention),
    (Kind::Cardiomegaly, "enlarged heart", Role::Mention),
    (Kind::Cardiomegaly, "enlarged cardiac", Role::Mention),
    (
        Kind::Cardiomegaly,
        "enlargement of the heart",
        Role::Mention,
    ),
    (Kind::Cardiomegaly, "heart size .. increased", Role::Mention),
    (
        Kind::Cardiomegaly,
        "enlargement of the cardiac",
        Role::Mention,
    ),
    (Kind::Cardiomegaly, "heart .. large", Role::Mention),
    (
        Kind::Cardiomegaly,
        "cardiac silhouette .. large",
        Role::Mention,
    ),
    // "Borderline" heart size: the IU coders code it as (borderline) cardiomegaly.
    (Kind::Cardiomegaly, "heart .. borderline", Role::Mention),
    (Kind::Cardiomegaly, "borderline .. heart", Role::Mention),
    (Kind::Cardiomegaly, "cardiac .. borderline", Role::Mention),
    (Kind::Cardiomegaly, "borderline .. cardiac", Role::Mention),
    (Kind::Cardiomegaly, "heart size", Role::Neutral),
    (Kind::Cardiomegaly, "cardiac size", Role::Neutral),
    (Kind::Cardiomegaly, "cardiac silhouette", Role::Neutral),
    (Kind::Cardiomegaly, "cardiac contour*", Role::Neutral),
    (Kind::Cardiomegaly, "heart", Role::Neutral),
    // Edema.
    (Kind::Edema, "edema", Role::Mention),
    (Kind::Edema, "congestion", Role::Mention),
    (Kind::Edema, "heart failure", Role::Mention),
    (Kind::Edema, "chf", Role::Mention),
    (Kind::Edema, "cephalization", Role::Mention),
    (Kind::Edema, "fluid overload", Role::Mention),
    (Kind::Edema, "kerley", Role::Mention),
    (Kind::Edema, "engorge*", Role::Mention),
    (Kind::Edema, "venous hypertension", Role::Mention),
    (Kind::Edema, "vascular redistribution", Role::Mention),
    // Pleural effusion.
    (Kind::Effusion, "effusion*", Role::Mention),
    (Kind::Effusion, "pleural fluid", Role::Mention),
    (Kind::Effusion, "pericardial effusion*", Role::Ignore),
    // Pleural other.
    (
        Kind::PleuralThickening,
        "pleural .. thicken*",
        Role::Mention,
    ),
    (
        Kind::PleuralThickening,
        "thicken* .. pleura*",
        Role::Mention,
    ),
    (Kind::PleuralThickening, "pleural plaque*", Role::Mention),
    (
        Kind::PleuralThickening,
        "pleural calcification*",
        Role::Mention,
    ),
    (Kind::PleuralThickening, "calcified pleura*", Role::Mention),
    (Kind::PleuralThickening, "pleural scar*", Role::Mention),
    (
        Kind::PleuralThickening,
        "pleural-parenchymal",
        Role::Mention,
    ),
    (Kind::PleuralThickening, "pleuroparenchymal", Role::Mention),
    (Kind::PleuralThickening, "fibrothorax", Role::Mention),
    // Pneumothorax.
    (Kind::Pneumothorax, "pneumothora*", Role::Mention),
    // Lung opacity (the parent finding; consolidation, pneumonia, atelectasis, edema and
    // lesions have their own kinds, as in CheXpert).
    (Kind::Opacity, "opacit*", Role::Mention),
    (Kind::Opacity, "opacif*", Role::Mention),
    (Kind::Opacity, "densit*", Role::Mention),
    (Kind::Opacity, "infiltrat*", Role::Mention),
    (Kind::Opacity, "airspace", Role::Mention),
    (Kind::Opacity, "air space", Role::Mention),
    (Kind::Opacity, "air-space", Role::Mention),
    (Kind::Opacity, "haziness", Role::Mention),
    (Kind::Opacity, "hazy", Role::Mention),
    (Kind::Opacity, "ground-glass", Role::Mention),
    (Kind::Opacity, "ground glass", Role::Mention),
    (Kind::Opacity, "reticular*", Role::Mention),
    (Kind::Opacity, "reticulonodular", Role::Mention),
    (Kind::Opacity, "interstitial marking*", Role::Mention),
    (Kind::Opacity, "interstitial prominence", Role::Mention),
    (Kind::Opacity, "interstitial pattern", Role::Mention),
    (Kind::Opacity, "interstitial disease", Role::Mention),
    (Kind::Opacity, "interstitial lung disease", Role::Mention),
    (Kind::Opacity, "bone densit*", Role::Ignore),
    (Kind::Opacity, "bony densit*", Role::Ignore),
    // Consolidation and pneumonia.
    (Kind::Consolidation, "consolidat*", Role::Mention),
    (Kind::Pneumonia, "pneumonia*", Role::Mention),
    (Kind::Pneumonia, "bronchopneumonia", Role::Mention),
    (Kind::Pneumonia, "pneumonitis", Role::Mention),
    (Kind::Pneumonia, "infection*", Role::Mention),
    (Kind::Pneumonia, "infectious", Role::Mention),
    // Healed: "calcified sequelae of prior granulomatous infection".
    (Kind::Pneumonia, "granulomatous infection*", Role::Ignore),
    // Atelectasis.
    (Kind::Atelectasis, "atelecta*", Role::Mention),
    // Lung lesion.
    (Kind::Nodule, "nodul*", Role::Mention),
    (Kind::Nodule, "nodular densit*", Role::Mention),
    (Kind::Nodule, "nodular opacit*", Role::Mention),
    (Kind::Nodule, "mass", Role::Mention),
    (Kind::Nodule, "masses", Role::Mention),
    (Kind::Nodule, "lesion*", Role::Mention),
    (Kind::Nodule, "tumor*", Role::Mention),
    (Kind::Nodule, "neoplasm*", Role::Mention),
    (Kind::Nodule, "carcinoma", Role::Mention),
    (Kind::Nodule, "cancer", Role::Mention),
    (Kind::Nodule, "malignan*", Role::Mention),
    (Kind::Nodule, "metasta*", Role::Mention),
    (Kind::Nodule, "cavitary", Role::Mention),
    (Kind::Nodule, "lytic lesion*", Role::Ignore),
    (Kind::Nodule, "sclerotic lesion*", Role::Ignore),
    (Kind::Nodule, "bone lesion*", Role::Ignore),
    (Kind::Nodule, "osseous lesion*", Role::Ignore),
    (Kind::Nodule, "bony lesion*", Role::Ignore),
    // Granuloma: not one of the 14 observations (a healed, calcified focus), but drawn.
    (Kind::Granuloma, "granulom*", Role::Mention),
    // Fracture.
    (Kind::Fracture, "fractur*", Role::Mention),
    // Support devices, split by what a phantom draws.
    (Kind::Sternotomy, "sternotomy", Role::Mention),
    (Kind::Sternotomy, "sternal wire*", Role::Mention),
    (Kind::Sternotomy, "sternal suture*", Role::Mention),
    (Kind::Sternotomy, "cabg", Role::Mention),
    (Kind::Line, "catheter*", Role::Mention),
    (Kind::Line, "picc", Role::Mention),
    (Kind::Line, "port", Role::Mention),
    (Kind::Line, "port-a-cath*", Role::Mention),
    (Kind::Line, "portacath*", Role::Mention),
    (Kind::Line, "mediport", Role::Mention),
    (Kind::Line, "central line", Role::Mention),
    (Kind::Line, "venous line", Role::Mention),
    (Kind::Line, "central venous", Role::Mention),
    (Kind::Line, "tube", Role::Mention),
    (Kind::Line, "tubes", Role::Mention),
    (Kind::Line, "endotracheal", Role::Mention),
    (Kind::Line, "nasogastric", Role::Mention),
    (Kind::Line, "swan-ganz", Role::Mention),
    (Kind::Line, "tubing", Role::Mention),
    // "XXXX tip in the SVC": the IU anonymiser often hides the device's own name.
    (Kind::Line, "tip", Role::Mention),
    (Kind::Line, "pleural line", Role::Ignore),
    (Kind::Line, "septal line*", Role::Ignore),
    (Kind::Pacemaker, "pacemaker*", Role::Mention),
    (Kind::Pacemaker, "pacer*", Role::Mention),
    (Kind::Pacemaker, "pacing", Role::Mention),
    (Kind::Pacemaker, "defibrillator*", Role::Mention),
    (Kind::Pacemaker, "aicd", Role::Mention),
    (Kind::Pacemaker, "icd", Role::Mention),
    (Kind::Pacemaker, "leads", Role::Mention),
    (Kind::Pacemaker, "generator", Role::Mention),
    (Kind::Device, "stent*", Role::Mention),
    (Kind::Device, "clip*", Role::Mention),
    (Kind::Device, "hardware", Role::Mention),
    (Kind::Device, "fixation", Role::Mention),
    (Kind::Device, "prosthe*", Role::Mention),
    (Kind::Device, "valve replacement", Role::Mention),
    (Kind::Device, "staples", Role::Mention),
    (Kind::Device, "suture*", Role::Mention),
    (Kind::Device, "coil*", Role::Mention),
    (Kind::Device, "device*", Role::Mention),
    (Kind::Device, "stimulator", Role::Mention),
    (Kind::Device, "breast prosthes*", Role::Ignore),
    (Kind::Device, "breast implant*", Role::Ignore),
    // Hyperinflation / emphysema: not one of the 14 observations, but drawn.
    (Kind::Hyperinflation, "hyperinflat*", Role::Mention),
    (Kind::Hyperinflation, "hyperexpan*", Role::Mention),
    (Kind::Hyperinflation, "hyperaerat*", Role::Mention),
    (Kind::Hyperinflation, "overinflat*", Role::Mention),
    (Kind::Hyperinflation, "emphysem*", Role::Mention),
    (Kind::Hyperinflation, "copd", Role::Mention),
    (Kind::Hyperinflation, "chronic obstructive", Role::Mention),
    (
        Kind::Hyperinflation,
        "flatten* .. diaphragm*",
        Role::Mention,
    ),
];

/// Uncertainty that is written as a double negative ("cannot be excluded"): checked first,
/// anywhere in the mention's clause, so its "not"/"excluded" is not read as a negation.
pub const DOUBLE_NEGATIVE_UNCERTAIN: &[&str] = &[
    "cannot exclude",
    "can not exclude",
    "cannot be excluded",
    "can not be excluded",
    "not be excluded",
    "not excluded",
    "cannot rule out",
    "cannot be ruled out",
    "not ruled out",
    "not be ruled out",
    "difficult to exclude",
    "difficult to rule out",
    "not entirely excluded",
    "not completely excluded",
];

/// Negation triggers before a mention (or inside its `..` gap), scope: the rest of the clause.
pub const PRE_NEGATIONS: &[&str] = &[
    "no",
    "not",
    "without",
    "negative for",
    "free of",
    "clear of",
    "absence of",
    "absent",
    "resolution of",
    "resolved",
    "rather than",
    "nor",
    "removal of",
    "removed",
];

/// Negation triggers after a mention, in its clause.
pub const POST_NEGATIONS: &[&str] = &[
    "not",
    "absent",
    "resolved",
    "ruled out",
    "excluded",
    "removed",
    "no longer",
    "within normal limits",
    "within limits of normal",
];

/// Words that look like negation triggers but are not ("no interval change in the opacity").
pub const PSEUDO_NEGATIONS: &[&str] = &[
    "no change",
    "no interval change",
    "no significant change",
    "no significant interval change",
    "not changed",
    "not significantly changed",
    "not only",
];

/// Extra negation triggers for [`Role::Neutral`] mentions ("normal heart size", "the
/// mediastinum is unremarkable"), and for any mention when inside its `..` gap ("heart size
/// normal, large hiatal hernia" is not "heart .. large"): before a lesion they mean nothing.
pub const NORMAL_TRIGGERS: &[&str] = &[
    "normal",
    "normally",
    "unremarkable",
    "within normal limits",
    "upper limits of normal",
    "upper limit of normal",
    "top normal",
    "top-normal",
];

/// Uncertainty triggers before a mention (or inside its gap).
pub const PRE_UNCERTAIN: &[&str] = &[
    "may",
    "might",
    "could",
    "possibl*",
    "probabl*",
    "likely",
    "suspect*",
    "suspicious",
    "question*",
    "concern*",
    "suggest*",
    "versus",
    "vs",
    "differential",
    "consider",
    "considered",
    "consideration",
    "equivocal",
    "indeterminate",
    "worrisome",
    "presum*",
    "uncertain",
    "perhaps",
];

/// Uncertainty triggers after a mention.
pub const POST_UNCERTAIN: &[&str] = &[
    "versus",
    "vs",
    "is possible",
    "are possible",
    "is suspected",
    "are suspected",
    "is questioned",
    "is likely",
    "are likely",
    "is considered",
    "could be",
    "may be",
];

/// Words that end a clause, and so a negation or uncertainty scope.
pub const TERMINATORS: &[&str] = &[
    "but",
    "however",
    "although",
    "though",
    "except",
    "aside",
    "apart",
    "which",
    "whereas",
    "otherwise",
    ";",
];
