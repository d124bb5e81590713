$( tiny.mm: an implication fragment and a disjoint-variable axiom, written for
   headstart's tests (normal and compressed proofs, scoping, $d). $)
$c ( ) -> wff |- set = $.
$v p q r $.
wp $f wff p $.
wq $f wff q $.
wr $f wff r $.
wi $a wff ( p -> q ) $.
${
  min $e |- p $.
  maj $e |- ( p -> q ) $.
  mp $a |- q $.
$}
ax-1 $a |- ( p -> ( q -> p ) ) $.
ax-2 $a |- ( ( p -> ( q -> r ) ) -> ( ( p -> q ) -> ( p -> r ) ) ) $.

$( Identity, normal proof. $)
id $p |- ( p -> p ) $=
  wp wp wp wi wi wp wp wi wp wp ax-1 wp wp wp wi wp wi wi wp wp wp wi wi wp wp
  wi wi wp wp wp wi ax-1 wp wp wp wi wp ax-2 mp mp $.

${
  a1i.1 $e |- p $.
  $( Inference from ax-1, normal proof. $)
  a1i $p |- ( q -> p ) $= wp wq wp wi a1i.1 wp wq ax-1 mp $.
$}

${
  mpd.1 $e |- ( p -> q ) $.
  mpd.2 $e |- ( p -> ( q -> r ) ) $.
  $( Deduction form of modus ponens, compressed proof. $)
  mpd $p |- ( p -> r ) $= ( ax-2 mp wi ) ABHACHDABCHHABHACHHEABCFGG $.
$}

$( Uses id twice: ( p -> p ) under ax-1, compressed with a saved step. $)
idi $p |- ( q -> ( p -> p ) ) $= ( ax-1 id mp wi ) AAFZBGFADGBCE $.

${
  syl.1 $e |- ( p -> q ) $.
  syl.2 $e |- ( q -> r ) $.
  $( Syllogism: uses the theorems a1i and mpd, normal proof. $)
  syl $p |- ( p -> r ) $= wp wq wr syl.1 wq wr wi wp syl.2 a1i mpd $.
$}

$v x y $.
vx $f set x $.
vy $f set y $.
weq $a wff x = y $.
${
  $d x y $.
  ax-d $a |- ( x = y -> x = y ) $.
  $( Uses ax-d with distinct x, y: allowed. $)
  dok $p |- ( x = y -> x = y ) $= vx vy ax-d $.
$}
