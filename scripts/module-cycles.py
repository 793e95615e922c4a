#!/usr/bin/env python3
"""Fails when the modules of src/ import each other in a cycle.

The graph has one node per file (a directory's mod.rs is the directory), and
an edge for every `crate::` or `super::` path that names another file's
module. A cycle means two parts of the request's way cannot be read, tested
or changed apart; the layers should only point down.
"""
import os,re,sys
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','src')
mods={}
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3]
        parts=rel.split('/')
        if parts[-1] in ('mod','lib','main'): parts=parts[:-1]
        mods['::'.join(parts)]=p
def resolve(path):
    segs=path.split('::')
    for i in range(len(segs),0,-1):
        m='::'.join(segs[:i])
        if m in mods: return m
    return None
edges={m:set() for m in mods}
for m,p in mods.items():
    text=open(p).read()
    text=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',text,flags=re.S)
    cur=m.split('::') if m else []
    for use in re.findall(r'crate::([\w:]+)',text):
        t=resolve(use.rstrip(':'))
        if t is not None and t!=m: edges[m].add(t)
    for use in re.findall(r'\bsuper::([\w:]+)',text):
        base=cur[:-1] if not p.endswith('mod.rs') else cur[:-1]
        t=resolve('::'.join(base+[use]).strip(':'))
        if t is not None and t!=m: edges[m].add(t)
    for grp in re.findall(r'use crate::(\w+(?:::\w+)*)::\{([^}]*)\}',text):
        for item in grp[1].split(','):
            item=item.strip().split(' ')[0]
            if item and item!='self':
                t=resolve(grp[0]+'::'+item.split('::')[0])
                if t and t!=m: edges[m].add(t)
# tarjan
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v: break
        if len(comp)>1: sccs.append(comp)
for v in edges:
    if v not in idx: sc(v)
found = [set(c) for c in sccs]
for comp in found:
    print('import cycle:', ' <-> '.join(sorted(comp)), file=sys.stderr)
sys.exit(1 if found else 0)
