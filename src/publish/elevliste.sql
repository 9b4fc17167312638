-- elevliste_vgs: the current 10th graders, with fylke and kommune from the school when it is
-- known (else from the skolenummer and the pupil). Run by publish/elevliste.rs over the current
-- rows of elev, elevforhold and skole.
SELECT
  COALESCE(s.fylkesnummer, substr(ef.skolenummer, 1, 2)) AS fylkesnummer,
  COALESCE(s.kommunenummer, e.kommunenummer) AS kommunenummer,
  ef.skolenummer, ef.klasse, e.fodselsnummer,
  concat_ws(' ', e.fornavn, e.mellomnavn, e.etternavn) AS elev_namn
FROM elevforhold ef
JOIN elev e ON e.id = ef.elev_id AND e.is_current
LEFT JOIN skole s ON s.skolenummer = ef.skolenummer AND s.is_current
WHERE ef.is_current AND ef.trinn = 10
ORDER BY ef.skolenummer, ef.klasse, e.etternavn, e.fornavn
